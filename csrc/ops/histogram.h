// Internal declarations shared by the kernels of the histogram observer ops
// (schemas and semantics in histogram.cpp, arithmetic in histogram_math.h).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

#include "histogram_math.h"

namespace edgeqat::ops {

constexpr const char* kObserveHistogramOp = "edgeqat::observe_histogram_";
constexpr const char* kHistogramRangeOp = "edgeqat::histogram_range";

// Argument checks that need no tensor values: histogram 1-D int64 with at
// least one bin, hist_min / hist_max 0-dim float32 or float64, everything on
// x's device (when x is given), x floating.
void check_histogram_state(const char* op, const at::Tensor& histogram, const at::Tensor& hist_min,
                           const at::Tensor& hist_max);
void check_observe_histogram_args(const at::Tensor& histogram, const at::Tensor& hist_min,
                                  const at::Tensor& hist_max, const at::Tensor& x);

// The state on the host, checked: counts >= 0; an empty range (min > max)
// holds no counts; a non-empty one is finite and holds some.
struct HostHistogram {
  std::vector<int64_t> counts;
  detail::histogram::Range range;
};
HostHistogram read_histogram(const char* op, const at::Tensor& histogram,
                             const at::Tensor& hist_min, const at::Tensor& hist_max);

// One observe_histogram_ step around the data pass that the kernels do:
// `plan` checks the batch range (NaN / inf in x is an error, counted in the
// message), reads the state and gives the new range with the old counts
// already moved into it; the kernel adds the batch's counts over that range;
// `store` writes counts and range back (the ends rounded outwards to the
// state dtype, so the range never shrinks below what was observed).
HostHistogram plan_histogram_update(const at::Tensor& histogram, const at::Tensor& hist_min,
                                    const at::Tensor& hist_max, const at::Tensor& x,
                                    double batch_lo, double batch_hi, bool has_nan);
void store_histogram(const HostHistogram& h, at::Tensor& histogram, at::Tensor& hist_min,
                     at::Tensor& hist_max);

}  // namespace edgeqat::ops
