// edgeqat's torch-free int8 runtime: everything public in one include.
// Link edgeqat::edgeqat_runtime (no torch needed). See docs/runtime-numerics.md.
#pragma once

#include "edgeqat/runtime/checks.h"
#include "edgeqat/runtime/kernels.h"
#include "edgeqat/runtime/model.h"
#include "edgeqat/runtime/params.h"
#include "edgeqat/runtime/reference.h"
#include "edgeqat/runtime/requantize.h"
#include "edgeqat/runtime/types.h"
