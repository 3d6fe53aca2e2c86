// Vectorized inner loops of the CPU fake-quant kernels, over contiguous spans.
// Torch-free: fake_quant_kernel.cpp splits tensors into spans and runs them
// in parallel; these functions only see raw pointers.
#pragma once

#include <cstdint>

#include "../fake_quant_math.h"

namespace edgeqat::detail {

// A nudged range prepared for the element loop: a degenerate range (scale 0)
// becomes [0, 0] with scale 1, which gives output 0.0 and the mask of x
// against 0 with no division by zero.
template <typename T>
struct KernelRange {
  T lo, hi, scale, zero_index;

  static KernelRange from(const NudgedRange<T>& r) {
    if (r.degenerate()) {
      return {T(0), T(0), T(1), T(0)};
    }
    return {r.nudged_min, r.nudged_max, r.scale, r.zero_index};
  }
};

// Per-position ranges as a struct of arrays, for layouts where the channel
// changes every few elements (channels-last, per-channel along the last axis).
template <typename T>
struct KernelRangeArrays {
  const T* lo;
  const T* hi;
  const T* scale;
  const T* zero_index;
};

// y[i] = fake_quant(x[i]) over n elements with one range; mask may be null.
void fake_quant_span(const float* x, float* y, uint8_t* mask, int64_t n,
                     const KernelRange<float>& r);
void fake_quant_span(const double* x, double* y, uint8_t* mask, int64_t n,
                     const KernelRange<double>& r);

// The same with range arrays indexed like x (the caller offsets the arrays).
void fake_quant_span(const float* x, float* y, uint8_t* mask, int64_t n,
                     const KernelRangeArrays<float>& r);
void fake_quant_span(const double* x, double* y, uint8_t* mask, int64_t n,
                     const KernelRangeArrays<double>& r);

// Backward over n elements: dx[i] = g[i] where mask is kInside, else 0;
// returns through *below / *above the sums of g where mask is kBelow / kAbove,
// accumulated in double.
void fake_quant_grad_span(const float* g, const uint8_t* mask, float* dx, int64_t n,
                          double* below, double* above);
void fake_quant_grad_span(const double* g, const uint8_t* mask, double* dx, int64_t n,
                          double* below, double* above);

// Backward with per-position sums: below[i] += g[i] where mask is kBelow, etc.
void fake_quant_grad_span_positions(const float* g, const uint8_t* mask, float* dx, int64_t n,
                                    double* below, double* above);
void fake_quant_grad_span_positions(const double* g, const uint8_t* mask, double* dx,
                                    int64_t n, double* below, double* above);

// Which instruction-set level the loader picked for these loops
// ("x86-64-v4", "x86-64-v3" or "default" with GCC), for benchmarks and bug
// reports.
const char* fake_quant_span_isa();

}  // namespace edgeqat::detail
