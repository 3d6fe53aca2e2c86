// Everything a LibTorch program needs from edgeqat.
#pragma once

#include "edgeqat/nn/config.h"
#include "edgeqat/nn/controls.h"
#include "edgeqat/nn/export.h"
#include "edgeqat/nn/modules.h"
#include "edgeqat/nn/quantizer.h"
#include "edgeqat/nn/schedule.h"
#include "edgeqat/ops.h"
#include "edgeqat/version.h"
