#include <cstdint>

#include "edgeqat/runtime/checks.h"
#include "edgeqat/runtime/reference.h"
#include "edgeqat/runtime/requantize.h"

namespace edgeqat::runtime::reference {

void fully_connected(KernelContext* /*ctx*/, const FullyConnectedParams& p,
                     const QuantizedMultiplier* multipliers, const FullyConnectedShape& s,
                     const int8_t* input, const int8_t* filter, const int32_t* bias,
                     int8_t* output) {
  const char* fn = "fully_connected";
  check_fully_connected(p, s);
  check_multipliers(multipliers, s.out_features, fn);
  check_pointer(input, int64_t{s.batch} * s.in_features, fn, "input");
  check_pointer(filter, int64_t{s.out_features} * s.in_features, fn, "filter");
  check_pointer(output, int64_t{s.batch} * s.out_features, fn, "output");

  for (int b = 0; b < s.batch; ++b) {
    const int8_t* x = input + int64_t{b} * s.in_features;
    for (int o = 0; o < s.out_features; ++o) {
      const int8_t* w = filter + int64_t{o} * s.in_features;
      int32_t acc = 0;
      for (int i = 0; i < s.in_features; ++i) {
        acc += int32_t{w[i]} * (int32_t{x[i]} - p.input_zero_point);
      }
      const int32_t total = bias ? saturate_to_int32(int64_t{acc} + bias[o]) : acc;
      output[int64_t{b} * s.out_features + o] =
          requantize_output(total, multipliers[o], p.output_zero_point, p.act_min, p.act_max);
    }
  }
}

}  // namespace edgeqat::runtime::reference
