#include "edgeqat/runtime/requantize.h"

#include <cmath>
#include <cstdint>

#include "error.h"

namespace edgeqat::runtime {

QuantizedMultiplier quantize_multiplier(double real_multiplier) {
  if (!std::isfinite(real_multiplier) || !(real_multiplier > 0.0)) {
    detail::fail("quantize_multiplier", "real_multiplier must be finite and > 0, got ",
                 real_multiplier);
  }
  int shift = 0;
  const double q = std::frexp(real_multiplier, &shift);  // real = q * 2^shift, q in [0.5, 1)
  // q * 2^31 is exact (a power-of-two scaling); round it half away from zero like TFLite.
  int64_t q_fixed = std::llround(std::ldexp(q, 31));
  if (q_fixed == (int64_t{1} << 31)) {  // q rounded up to 1.0: renormalize
    q_fixed /= 2;
    ++shift;
  }
  if (shift < kMinShift) return {0, 0};  // below 2^-32: not representable, acts as 0
  if (shift > kMaxShift) {
    detail::fail("quantize_multiplier", "real_multiplier must be < 2^30 = 1073741824 (shift <= ",
                 kMaxShift, "), got ", real_multiplier);
  }
  return {static_cast<int32_t>(q_fixed), shift};
}

double quantized_multiplier_value(QuantizedMultiplier m) {
  return std::ldexp(static_cast<double>(m.multiplier), m.shift - 31);
}

void check_quantized_multiplier(QuantizedMultiplier m, const char* what) {
  if (m.multiplier < 0) {
    detail::fail("check_quantized_multiplier", what, ".multiplier must be >= 0, got ",
                 m.multiplier);
  }
  if (m.shift < kMinShift || m.shift > kMaxShift) {
    detail::fail("check_quantized_multiplier", what, ".shift must be in [", kMinShift, ", ",
                 kMaxShift, "], got ", m.shift);
  }
}

}  // namespace edgeqat::runtime
