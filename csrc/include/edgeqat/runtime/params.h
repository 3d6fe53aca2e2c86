// Load / export time: the kernels' parameter structs computed from float scales and zero points.
//
// These are the only runtime functions that see a float scale of a hidden tensor; they run once
// per node when a model is exported or loaded, never per inference. Scales are taken as double
// (float32 scales convert exactly); real multipliers are computed in double as TFLite does.
// All of them throw std::invalid_argument naming the argument and its value on bad input.
//
// Example (a conv with a fused ReLU6 and stride 2):
//   auto act = activation_range(Activation::kRelu6, out_scale, out_zp);
//   ConvSetup conv = make_conv_params(in_scale, in_zp, weight_scales, out_scale, out_zp, act);
//   conv.params.stride_h = conv.params.stride_w = 2;
//   conv.params.padding = {1, 1, 1, 1};
//   reference::conv2d(nullptr, conv.params, conv.multipliers.data(), ...);
#pragma once

#include <cstdint>
#include <vector>

#include "edgeqat/runtime/requantize.h"
#include "edgeqat/runtime/types.h"

namespace edgeqat::runtime {

// Fused activations that become output clamps.
enum class Activation { kNone, kRelu, kRelu6 };

struct ActivationRange {
  int32_t min = kInt8Min, max = kInt8Max;
};

// The output clamp for a fused activation, like TFLite's CalculateActivationRangeQuantized:
// kNone: [-128, 127]; kRelu: [max(-128, zp), 127];
// kRelu6: [max(-128, zp), min(127, zp + round(6 / scale))] (round: ties away from zero).
ActivationRange activation_range(Activation activation, double output_scale,
                                 int32_t output_zero_point);

// Per-output-channel multipliers M[c] = input_scale * weight_scales[c] / output_scale,
// each through quantize_multiplier (an error names the channel and the value of M[c]).
std::vector<QuantizedMultiplier> make_channel_multipliers(double input_scale,
                                                          const std::vector<double>& weight_scales,
                                                          double output_scale);

// A params struct together with the per-output-channel multipliers its kernel reads.
// Geometry fields (stride, padding, dilation, groups, depth multiplier) keep their defaults;
// set them on `params` afterwards.
struct ConvSetup {
  ConvParams params;
  std::vector<QuantizedMultiplier> multipliers;
};
struct DepthwiseConvSetup {
  DepthwiseConvParams params;
  std::vector<QuantizedMultiplier> multipliers;
};
struct FullyConnectedSetup {
  FullyConnectedParams params;
  std::vector<QuantizedMultiplier> multipliers;
};

// weight_scales: one per output channel (a per-tensor weight scale is a vector of equal values).
ConvSetup make_conv_params(double input_scale, int32_t input_zero_point,
                           const std::vector<double>& weight_scales, double output_scale,
                           int32_t output_zero_point, ActivationRange act = {});
DepthwiseConvSetup make_depthwise_conv_params(double input_scale, int32_t input_zero_point,
                                              const std::vector<double>& weight_scales,
                                              double output_scale, int32_t output_zero_point,
                                              ActivationRange act = {});
FullyConnectedSetup make_fully_connected_params(double input_scale, int32_t input_zero_point,
                                                const std::vector<double>& weight_scales,
                                                double output_scale, int32_t output_zero_point,
                                                ActivationRange act = {});

// TFLite's int8 add: left_shift = 20, twice_max = 2 * max(s1, s2),
// input multipliers s_i / twice_max (<= 0.5), output multiplier twice_max / (2^20 * s_out).
AddParams make_add_params(double input1_scale, int32_t input1_zero_point, double input2_scale,
                          int32_t input2_zero_point, double output_scale,
                          int32_t output_zero_point, int32_t act_min = kInt8Min,
                          int32_t act_max = kInt8Max);

// Max / average pooling: pure geometry plus the clamp (input and output share scale and zero
// point, so no multiplier). Validates the values that do not depend on the input shape.
PoolParams make_pool_params(int filter_h, int filter_w, int stride_h, int stride_w,
                            Padding padding = {}, int32_t act_min = kInt8Min,
                            int32_t act_max = kInt8Max);

// Global average pooling of an NHWC input: one window covering the whole image (output 1x1).
PoolParams make_global_pool_params(const Shape4& input_shape, int32_t act_min = kInt8Min,
                                   int32_t act_max = kInt8Max);

// Graph-boundary quantization parameters: scale finite and > 0 also as a float32,
// zero point in [-128, 127].
QuantizeParams make_quantize_params(double scale, int32_t zero_point);

}  // namespace edgeqat::runtime
