// Reference add (integer only) and the graph-boundary quantize / dequantize (float32).
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "edgeqat/runtime/checks.h"
#include "edgeqat/runtime/reference.h"
#include "edgeqat/runtime/requantize.h"

namespace edgeqat::runtime::reference {

void add(KernelContext* /*ctx*/, const AddParams& p, size_t count, const int8_t* input1,
         const int8_t* input2, int8_t* output) {
  check_add(p);
  const auto n = static_cast<int64_t>(count);
  check_pointer(input1, n, "add", "input1");
  check_pointer(input2, n, "add", "input2");
  check_pointer(output, n, "add", "output");
  for (size_t i = 0; i < count; ++i) {
    // |q - zp| <= 255, so the shifted values stay below 2^28 and the sum below 2^29.
    const int32_t a = (int32_t{input1[i]} - p.input1_zero_point) * (int32_t{1} << p.left_shift);
    const int32_t b = (int32_t{input2[i]} - p.input2_zero_point) * (int32_t{1} << p.left_shift);
    const int32_t sum = multiply_by_quantized_multiplier(a, p.input1_multiplier) +
                        multiply_by_quantized_multiplier(b, p.input2_multiplier);
    output[i] = requantize_output(sum, p.output_multiplier, p.output_zero_point, p.act_min,
                                  p.act_max);
  }
}

namespace {

// Round half to even without depending on the floating-point environment's rounding mode
// (std::nearbyint would). |v| <= 2^23 here, so v - floor(v) is exact.
float round_half_to_even(float v) {
  const float r = std::floor(v);
  const float frac = v - r;
  if (frac > 0.5f) return r + 1.0f;
  if (frac < 0.5f) return r;
  return std::fmod(r, 2.0f) == 0.0f ? r : r + 1.0f;
}

}  // namespace

void quantize(KernelContext* /*ctx*/, const QuantizeParams& p, size_t count, const float* input,
              int8_t* output) {
  check_quantize_params(p, "quantize");
  const auto n = static_cast<int64_t>(count);
  check_pointer(input, n, "quantize", "input");
  check_pointer(output, n, "quantize", "output");
  for (size_t i = 0; i < count; ++i) {
    float v = input[i] / p.scale;  // division, not a reciprocal (onnxruntime, section 5)
    if (std::isnan(v)) {
      output[i] = static_cast<int8_t>(p.zero_point);  // NaN: real 0
      continue;
    }
    // Anything beyond +-1024 saturates whatever the zero point; clamping first keeps the
    // conversion to int defined and does not change the result.
    v = v < -1024.0f ? -1024.0f : (v > 1024.0f ? 1024.0f : v);
    int32_t q = static_cast<int32_t>(round_half_to_even(v)) + p.zero_point;
    q = q < kInt8Min ? kInt8Min : (q > kInt8Max ? kInt8Max : q);
    output[i] = static_cast<int8_t>(q);
  }
}

void dequantize(KernelContext* /*ctx*/, const QuantizeParams& p, size_t count,
                const int8_t* input, float* output) {
  check_quantize_params(p, "dequantize");
  const auto n = static_cast<int64_t>(count);
  check_pointer(input, n, "dequantize", "input");
  check_pointer(output, n, "dequantize", "output");
  for (size_t i = 0; i < count; ++i) {
    output[i] = static_cast<float>(int32_t{input[i]} - p.zero_point) * p.scale;
  }
}

}  // namespace edgeqat::runtime::reference
