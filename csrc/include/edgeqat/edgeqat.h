// Everything a LibTorch program needs from edgeqat.
#pragma once

#include "edgeqat/ops.h"
#include "edgeqat/version.h"
