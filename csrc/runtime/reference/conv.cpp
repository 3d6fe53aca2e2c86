// Reference conv2d and depthwise conv2d: the textbook loops, int32 accumulation (exact: the
// accumulation depth is bounded by kMaxAccumulationDepth), one requantization per output.
#include <cstdint>

#include "edgeqat/runtime/checks.h"
#include "edgeqat/runtime/reference.h"
#include "edgeqat/runtime/requantize.h"

namespace edgeqat::runtime::reference {

void conv2d(KernelContext* /*ctx*/, const ConvParams& p, const QuantizedMultiplier* multipliers,
            const Shape4& in, const int8_t* input, const Shape4& fs, const int8_t* filter,
            const int32_t* bias, const Shape4& out, int8_t* output) {
  check_conv2d(p, in, fs, out);
  check_multipliers(multipliers, out.c, "conv2d");
  check_pointer(input, num_elements(in), "conv2d", "input");
  check_pointer(filter, num_elements(fs), "conv2d", "filter");
  check_pointer(output, num_elements(out), "conv2d", "output");

  const int in_per_group = fs.c;
  const int out_per_group = out.c / p.groups;
  for (int b = 0; b < out.n; ++b) {
    for (int oy = 0; oy < out.h; ++oy) {
      for (int ox = 0; ox < out.w; ++ox) {
        for (int oc = 0; oc < out.c; ++oc) {
          const int group = oc / out_per_group;
          int32_t acc = 0;
          for (int ky = 0; ky < fs.h; ++ky) {
            const int64_t iy =
                int64_t{oy} * p.stride_h - p.padding.top + int64_t{ky} * p.dilation_h;
            if (iy < 0 || iy >= in.h) continue;  // padding: real 0, contributes nothing
            for (int kx = 0; kx < fs.w; ++kx) {
              const int64_t ix =
                  int64_t{ox} * p.stride_w - p.padding.left + int64_t{kx} * p.dilation_w;
              if (ix < 0 || ix >= in.w) continue;
              const int8_t* x = input + ((b * int64_t{in.h} + iy) * in.w + ix) * in.c +
                                int64_t{group} * in_per_group;
              const int8_t* w = filter + ((int64_t{oc} * fs.h + ky) * fs.w + kx) * fs.c;
              for (int ic = 0; ic < in_per_group; ++ic) {
                acc += int32_t{w[ic]} * (int32_t{x[ic]} - p.input_zero_point);
              }
            }
          }
          const int32_t total = bias ? saturate_to_int32(int64_t{acc} + bias[oc]) : acc;
          output[((int64_t{b} * out.h + oy) * out.w + ox) * out.c + oc] = requantize_output(
              total, multipliers[oc], p.output_zero_point, p.act_min, p.act_max);
        }
      }
    }
  }
}

void depthwise_conv2d(KernelContext* /*ctx*/, const DepthwiseConvParams& p,
                      const QuantizedMultiplier* multipliers, const Shape4& in,
                      const int8_t* input, const Shape4& fs, const int8_t* filter,
                      const int32_t* bias, const Shape4& out, int8_t* output) {
  check_depthwise_conv2d(p, in, fs, out);
  check_multipliers(multipliers, out.c, "depthwise_conv2d");
  check_pointer(input, num_elements(in), "depthwise_conv2d", "input");
  check_pointer(filter, num_elements(fs), "depthwise_conv2d", "filter");
  check_pointer(output, num_elements(out), "depthwise_conv2d", "output");

  for (int b = 0; b < out.n; ++b) {
    for (int oy = 0; oy < out.h; ++oy) {
      for (int ox = 0; ox < out.w; ++ox) {
        for (int oc = 0; oc < out.c; ++oc) {
          const int ic = oc / p.depth_multiplier;
          int32_t acc = 0;
          for (int ky = 0; ky < fs.h; ++ky) {
            const int64_t iy =
                int64_t{oy} * p.stride_h - p.padding.top + int64_t{ky} * p.dilation_h;
            if (iy < 0 || iy >= in.h) continue;
            for (int kx = 0; kx < fs.w; ++kx) {
              const int64_t ix =
                  int64_t{ox} * p.stride_w - p.padding.left + int64_t{kx} * p.dilation_w;
              if (ix < 0 || ix >= in.w) continue;
              const int32_t x = input[((b * int64_t{in.h} + iy) * in.w + ix) * in.c + ic];
              const int32_t w = filter[(int64_t{ky} * fs.w + kx) * fs.c + oc];
              acc += w * (x - p.input_zero_point);
            }
          }
          const int32_t total = bias ? saturate_to_int32(int64_t{acc} + bias[oc]) : acc;
          output[((int64_t{b} * out.h + oy) * out.w + ox) * out.c + oc] = requantize_output(
              total, multipliers[oc], p.output_zero_point, p.act_min, p.act_max);
        }
      }
    }
  }
}

}  // namespace edgeqat::runtime::reference
