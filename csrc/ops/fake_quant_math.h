// The arithmetic of TensorFlow's FakeQuantWithMinMaxVars, free of torch.
//
// Reference: tensorflow/core/kernels/fake_quant_ops_functor.h (Nudge and the
// Vars functors); the rules are restated in docs/numerics.md. Everything is
// computed in the compute type T (float for float/half/bfloat16 inputs, double
// for double inputs) so that float32 results are bit-exact with TensorFlow.
#pragma once

#include <cmath>
#include <cstdint>

namespace edgeqat::detail {

// Per-element outcome of the forward pass, kept by autograd instead of the
// input (1 byte per element instead of 4 or 8).
enum MaskCode : uint8_t {
  kInside = 0,  // nudged_min <= x <= nudged_max: gradient flows to x
  kBelow = 1,   // x < nudged_min: gradient flows to min
  kAbove = 2,   // x > nudged_max: gradient flows to max
  kNaN = 3,     // x is NaN: no gradient anywhere (as in TensorFlow)
};

inline int64_t quant_min(bool narrow_range) { return narrow_range ? 1 : 0; }
inline int64_t quant_max(int64_t num_bits) { return (int64_t{1} << num_bits) - 1; }

// A range after nudging. `zero_index` is the grid index of real 0.0
// (nudged_zero_point - quant_min), so that x == 0 maps to exactly 0.0.
template <typename T>
struct NudgedRange {
  T nudged_min;
  T nudged_max;
  T scale;
  T zero_index;

  // min == max (or a width that underflows to a zero scale): the grid
  // collapses to the single value 0.0. Documented in docs/numerics.md.
  bool degenerate() const { return !(scale > T(0)); }
};

// TensorFlow's Nudge, generalised to any [quant_min, quant_max] grid. The
// caller has checked that min and max are finite, min <= max and max - min
// is finite.
template <typename T>
NudgedRange<T> nudge(T min, T max, int64_t quant_min_i, int64_t quant_max_i) {
  const T qmin = static_cast<T>(quant_min_i);
  const T qmax = static_cast<T>(quant_max_i);
  const T scale = (max - min) / (qmax - qmin);
  if (!(scale > T(0))) {
    return {T(0), T(0), T(0), T(0)};
  }
  const T zero_point_from_min = qmin - min / scale;
  T zero_point;
  if (zero_point_from_min < qmin) {
    zero_point = qmin;
  } else if (zero_point_from_min > qmax) {
    zero_point = qmax;
  } else {
    // Ties away from zero, as std::round in TensorFlow. zero_point_from_min
    // is >= qmin >= 0 here, so this is also "ties up".
    zero_point = std::round(zero_point_from_min);
  }
  return {(qmin - zero_point) * scale, (qmax - zero_point) * scale, scale,
          zero_point - qmin};
}

// One element of the forward. The clamped value minus nudged_min is never
// negative, so floor(v + 0.5) rounds ties up, as TensorFlow does. Dividing by
// the scale (not multiplying by a reciprocal) matches TF's Vars kernel and
// onnxruntime's QuantizeLinear. Writing the output as (q - zero_index) * scale
// (recent TensorFlow) gives exactly 0.0 for x == 0.0. NaN propagates.
template <typename T>
inline T fake_quant_value(T x, T nudged_min, T nudged_max, T scale, T zero_index) {
  const T lo_clamped = x < nudged_min ? nudged_min : x;
  const T clamped = nudged_max < lo_clamped ? nudged_max : lo_clamped;
  const T q = std::floor((clamped - nudged_min) / scale + T(0.5));
  return (q - zero_index) * scale;
}

template <typename T>
inline uint8_t mask_code(T x, T nudged_min, T nudged_max) {
  // Written branch-free so the loops that call it vectorize.
  return static_cast<uint8_t>((x < nudged_min) * kBelow + (x > nudged_max) * kAbove +
                              (x != x) * kNaN);
}

}  // namespace edgeqat::detail
