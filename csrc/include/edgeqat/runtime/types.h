// Shapes and the plain parameter structs of the int8 kernels (torch-free).
//
// Every kernel takes raw pointers, shapes and one of these structs. Everything that can be
// computed ahead (fixed-point multipliers, zero points, clamps) is computed at export / load time
// by the helpers in params.h and stored here; kernels never touch a float scale.
//
// Layouts (row-major, last dimension fastest):
//   activations       NHWC int8, one scale and zero point per tensor
//   conv filter       OHWI int8 [out_channels, kernel_h, kernel_w, in_channels / groups]
//   depthwise filter  1HWO int8 [1, kernel_h, kernel_w, in_channels * depth_multiplier];
//                     output channel oc reads input channel oc / depth_multiplier
//   fc filter         [out_features, in_features] int8
//   bias              int32 [out_channels], scale s_in * s_w[c], zero point 0 (may be null: 0)
// Weights are symmetric (zero point 0), per output channel: one QuantizedMultiplier per output
// channel, passed to the kernel as an array beside the params struct.
#pragma once

#include <cstdint>

#include "edgeqat/runtime/requantize.h"

namespace edgeqat::runtime {

// NHWC for activations; filters reuse it as documented above (n = out_channels for OHWI).
struct Shape4 {
  int n = 0, h = 0, w = 0, c = 0;
};

inline bool operator==(const Shape4& a, const Shape4& b) {
  return a.n == b.n && a.h == b.h && a.w == b.w && a.c == b.c;
}
inline bool operator!=(const Shape4& a, const Shape4& b) { return !(a == b); }

inline int64_t num_elements(const Shape4& s) {
  return int64_t{s.n} * int64_t{s.h} * int64_t{s.w} * int64_t{s.c};
}

// Explicit padding in pixels (asymmetric "SAME" padding is expressible).
struct Padding {
  int top = 0, left = 0, bottom = 0, right = 0;
};

// The int8 range and the clamp defaults (no fused activation).
inline constexpr int32_t kInt8Min = -128;
inline constexpr int32_t kInt8Max = 127;

// The accumulator of a conv tap loop is the exact sum of w * (q_in - zp_in): each product is at
// most 128 * 255 = 32640 in magnitude, so up to 65536 terms fit in int32 without overflow.
// Kernels reject deeper reductions (kernel_h * kernel_w * in_channels_per_group, in_features),
// which lets fast kernels accumulate in int32 and still agree bit for bit with the reference.
inline constexpr int64_t kMaxAccumulationDepth = 65536;

// Pooling windows hold at most 2^24 taps, so a sum of int8 values fits in int32.
inline constexpr int64_t kMaxPoolWindow = int64_t{1} << 24;

// Conv2d over NHWC with OHWI filters; groups divide both channel counts.
//   acc = bias[oc] + sum over taps inside the image of w * (q_in - input_zero_point)
//   out = clamp(requant(acc, multipliers[oc]) + output_zero_point, act_min, act_max)
// Taps in the padding contribute nothing (as if the input there were its zero point: real 0).
struct ConvParams {
  int stride_h = 1, stride_w = 1;
  int dilation_h = 1, dilation_w = 1;
  Padding padding;
  int groups = 1;
  int32_t input_zero_point = 0;
  int32_t output_zero_point = 0;
  int32_t act_min = kInt8Min, act_max = kInt8Max;  // fused ReLU / ReLU6 live here
};

// Depthwise conv2d (PyTorch groups == in_channels) with a depth multiplier; same arithmetic.
struct DepthwiseConvParams {
  int stride_h = 1, stride_w = 1;
  int dilation_h = 1, dilation_w = 1;
  Padding padding;
  int depth_multiplier = 1;
  int32_t input_zero_point = 0;
  int32_t output_zero_point = 0;
  int32_t act_min = kInt8Min, act_max = kInt8Max;
};

// Fully connected: input [batch, in_features], filter [out_features, in_features].
struct FullyConnectedShape {
  int batch = 0, in_features = 0, out_features = 0;
};

struct FullyConnectedParams {
  int32_t input_zero_point = 0;
  int32_t output_zero_point = 0;
  int32_t act_min = kInt8Min, act_max = kInt8Max;
};

// Elementwise add of two int8 tensors of the same shape (TFLite's scheme, see make_add_params):
//   a_i = (q_i - zp_i) << left_shift, scaled_i = requant(a_i, input_i_multiplier)
//   out = clamp(requant(scaled_1 + scaled_2, output_multiplier) + output_zero_point, ...)
struct AddParams {
  int32_t input1_zero_point = 0;
  int32_t input2_zero_point = 0;
  int left_shift = 20;
  QuantizedMultiplier input1_multiplier;  // s1 / (2 max(s1, s2)), <= 0.5
  QuantizedMultiplier input2_multiplier;  // s2 / (2 max(s1, s2)), <= 0.5
  QuantizedMultiplier output_multiplier;  // 2 max(s1, s2) / (2^left_shift s_out)
  int32_t output_zero_point = 0;
  int32_t act_min = kInt8Min, act_max = kInt8Max;
};

// Max / average pooling over NHWC. The output keeps the input's scale and zero point.
// Window taps in the padding are skipped: they neither win a max nor count in an average.
struct PoolParams {
  int filter_h = 1, filter_w = 1;
  int stride_h = 1, stride_w = 1;
  Padding padding;
  int32_t act_min = kInt8Min, act_max = kInt8Max;
};

// Quantize (float -> int8) / dequantize (int8 -> float) at the graph boundary:
//   q = clamp(round_half_to_even(x / scale) + zero_point, -128, 127),  x = (q - zero_point) * scale
// in float32 like onnxruntime's QuantizeLinear / DequantizeLinear.
struct QuantizeParams {
  float scale = 1.0f;
  int32_t zero_point = 0;
};

}  // namespace edgeqat::runtime
