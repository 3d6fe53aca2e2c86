// Fixed-point requantization of the int8 runtime (torch-free: standard library only).
//
// A real multiplier M > 0 (for a conv output channel M = s_in * s_w[c] / s_out) is stored as
//   M ~= multiplier * 2^(shift - 31),   multiplier in [2^30, 2^31) (or 0), shift in [-31, 30],
// and applied to an int32 with ONE rounding step ("single rounding", as in newer TFLite builds,
// XNNPACK and ruy):
//   multiply_by_quantized_multiplier(x, m)
//     = floor((x * multiplier + 2^(30 - shift)) / 2^(31 - shift))
// computed exactly in 64 bits: the exact product x * M0 * 2^(shift - 31) rounded to the nearest
// integer, ties toward +infinity (so 2.5 -> 3 but -2.5 -> -2), then saturated to int32.
// docs/runtime-numerics.md explains the choice and how it relates to TFLite and onnxruntime.
#pragma once

#include <cstdint>
#include <limits>

namespace edgeqat::runtime {

// The shift range in which the single-rounding formula is exact in 64 bits:
// total right shift 31 - shift in [1, 62], so the rounding term 2^(30 - shift) exists
// and |x * multiplier| + 2^(30 - shift) < 2^63.
inline constexpr int kMinShift = -31;
inline constexpr int kMaxShift = 30;

// M ~= multiplier * 2^(shift - 31). multiplier == 0 (with shift 0) encodes a real multiplier too
// small to represent (below 2^-32): every product is then 0.
struct QuantizedMultiplier {
  int32_t multiplier = 0;
  int shift = 0;
};

inline bool operator==(QuantizedMultiplier a, QuantizedMultiplier b) {
  return a.multiplier == b.multiplier && a.shift == b.shift;
}
inline bool operator!=(QuantizedMultiplier a, QuantizedMultiplier b) { return !(a == b); }

// Load / export time: decomposes real_multiplier (finite, > 0, < 2^30) as TFLite's
// QuantizeMultiplier does: frexp gives real = q * 2^shift with q in [0.5, 1);
// multiplier = round(q * 2^31) (ties away from zero; q * 2^31 is exact in double);
// a multiplier that rounds up to 2^31 becomes 2^30 with shift + 1; a shift below -31
// gives {0, 0}. The stored value is within 2^-31 relative of real_multiplier.
// Throws std::invalid_argument for a non-finite, zero or negative value, or one >= 2^30
// (shift would exceed kMaxShift).
QuantizedMultiplier quantize_multiplier(double real_multiplier);

// The real value a QuantizedMultiplier stands for: multiplier * 2^(shift - 31).
double quantized_multiplier_value(QuantizedMultiplier m);

// Throws std::invalid_argument naming `what` unless 0 <= m.multiplier and
// kMinShift <= m.shift <= kMaxShift. For multipliers that come from outside (a model file);
// quantize_multiplier's results always pass. Done once at load time, never per call.
void check_quantized_multiplier(QuantizedMultiplier m, const char* what);

inline int32_t saturate_to_int32(int64_t v) {
  constexpr int64_t lo = std::numeric_limits<int32_t>::min();
  constexpr int64_t hi = std::numeric_limits<int32_t>::max();
  return static_cast<int32_t>(v < lo ? lo : (v > hi ? hi : v));
}

// The arithmetic right shift of a negative int64 rounds toward -infinity (implementation-defined
// before C++20, arithmetic on every compiler we build with); the rounding mode depends on it.
static_assert((int64_t{-3} >> 1) == -2, "edgeqat runtime needs an arithmetic right shift");

// x * M rounded to nearest, ties toward +infinity, saturated to int32 (saturation can only happen
// when shift > 0, i.e. M >= 1). Precondition (checked where m is made, not here):
// m passes check_quantized_multiplier.
inline int32_t multiply_by_quantized_multiplier(int32_t x, QuantizedMultiplier m) {
  const int total_shift = 31 - m.shift;                       // in [1, 62]
  const int64_t round = int64_t{1} << (total_shift - 1);      // half of the divisor
  const int64_t product = int64_t{x} * int64_t{m.multiplier};  // |product| < 2^62
  return saturate_to_int32((product + round) >> total_shift);  // floor(. + 1/2)
}

// The output stage of conv / depthwise / fully connected:
//   clamp(multiply_by_quantized_multiplier(acc, m) + output_zero_point, act_min, act_max)
// with the zero-point addition done in 64 bits (no wrap-around).
inline int8_t requantize_output(int32_t acc, QuantizedMultiplier m, int32_t output_zero_point,
                                int32_t act_min, int32_t act_max) {
  int64_t v = int64_t{multiply_by_quantized_multiplier(acc, m)} + output_zero_point;
  v = v < act_min ? act_min : (v > act_max ? act_max : v);
  return static_cast<int8_t>(v);
}

}  // namespace edgeqat::runtime
