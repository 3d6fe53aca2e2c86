// Load / export time helpers: float scales -> the kernels' integer parameters.
#include "edgeqat/runtime/params.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "edgeqat/runtime/checks.h"
#include "error.h"

namespace edgeqat::runtime {
namespace {

void check_scale(double scale, const char* function, const std::string& arg) {
  if (!std::isfinite(scale) || !(scale > 0.0)) {
    detail::fail(function, arg, " must be finite and > 0, got ", scale);
  }
}

// quantize_multiplier with the message naming what the multiplier is made of.
QuantizedMultiplier multiplier_for(double real, const char* function, const std::string& what) {
  if (!std::isfinite(real) || !(real > 0.0) || real >= 1073741824.0) {
    detail::fail(function, what, " = ", real,
                 " is not a usable multiplier: it must be finite, > 0 and < 2^30");
  }
  return quantize_multiplier(real);
}

template <class Params>
Params output_stage(const char* function, int32_t input_zero_point, int32_t output_zero_point,
                    ActivationRange act) {
  check_zero_point(input_zero_point, function, "input_zero_point");
  check_zero_point(output_zero_point, function, "output_zero_point");
  check_activation_range(act.min, act.max, function);
  Params p;
  p.input_zero_point = input_zero_point;
  p.output_zero_point = output_zero_point;
  p.act_min = act.min;
  p.act_max = act.max;
  return p;
}

std::vector<QuantizedMultiplier> channel_multipliers(const char* function, double input_scale,
                                                     const std::vector<double>& weight_scales,
                                                     double output_scale) {
  check_scale(input_scale, function, "input_scale");
  check_scale(output_scale, function, "output_scale");
  if (weight_scales.empty()) detail::fail(function, "weight_scales must not be empty");
  std::vector<QuantizedMultiplier> out;
  out.reserve(weight_scales.size());
  for (size_t c = 0; c < weight_scales.size(); ++c) {
    const std::string name = "weight_scales[" + std::to_string(c) + "]";
    check_scale(weight_scales[c], function, name);
    const double real = input_scale * weight_scales[c] / output_scale;
    out.push_back(multiplier_for(
        real, function, "input_scale * " + name + " / output_scale (output channel " +
                            std::to_string(c) + ")"));
  }
  return out;
}

}  // namespace

ActivationRange activation_range(Activation activation, double output_scale,
                                 int32_t output_zero_point) {
  check_scale(output_scale, "activation_range", "output_scale");
  check_zero_point(output_zero_point, "activation_range", "output_zero_point");
  ActivationRange r;
  switch (activation) {
    case Activation::kNone:
      break;
    case Activation::kRelu:
      r.min = std::max(kInt8Min, output_zero_point);
      break;
    case Activation::kRelu6: {
      r.min = std::max(kInt8Min, output_zero_point);
      const double six = std::round(6.0 / output_scale);  // ties away from zero, like TFLite
      r.max = six >= static_cast<double>(kInt8Max - output_zero_point)
                  ? kInt8Max
                  : output_zero_point + static_cast<int32_t>(six);
      break;
    }
    default:
      detail::fail("activation_range", "unknown activation ", static_cast<int>(activation));
  }
  return r;
}

std::vector<QuantizedMultiplier> make_channel_multipliers(double input_scale,
                                                          const std::vector<double>& weight_scales,
                                                          double output_scale) {
  return channel_multipliers("make_channel_multipliers", input_scale, weight_scales,
                             output_scale);
}

ConvSetup make_conv_params(double input_scale, int32_t input_zero_point,
                           const std::vector<double>& weight_scales, double output_scale,
                           int32_t output_zero_point, ActivationRange act) {
  const char* fn = "make_conv_params";
  ConvSetup s;
  s.params = output_stage<ConvParams>(fn, input_zero_point, output_zero_point, act);
  s.multipliers = channel_multipliers(fn, input_scale, weight_scales, output_scale);
  return s;
}

DepthwiseConvSetup make_depthwise_conv_params(double input_scale, int32_t input_zero_point,
                                              const std::vector<double>& weight_scales,
                                              double output_scale, int32_t output_zero_point,
                                              ActivationRange act) {
  const char* fn = "make_depthwise_conv_params";
  DepthwiseConvSetup s;
  s.params = output_stage<DepthwiseConvParams>(fn, input_zero_point, output_zero_point, act);
  s.multipliers = channel_multipliers(fn, input_scale, weight_scales, output_scale);
  return s;
}

FullyConnectedSetup make_fully_connected_params(double input_scale, int32_t input_zero_point,
                                                const std::vector<double>& weight_scales,
                                                double output_scale, int32_t output_zero_point,
                                                ActivationRange act) {
  const char* fn = "make_fully_connected_params";
  FullyConnectedSetup s;
  s.params = output_stage<FullyConnectedParams>(fn, input_zero_point, output_zero_point, act);
  s.multipliers = channel_multipliers(fn, input_scale, weight_scales, output_scale);
  return s;
}

AddParams make_add_params(double input1_scale, int32_t input1_zero_point, double input2_scale,
                          int32_t input2_zero_point, double output_scale,
                          int32_t output_zero_point, int32_t act_min, int32_t act_max) {
  const char* fn = "make_add_params";
  check_scale(input1_scale, fn, "input1_scale");
  check_scale(input2_scale, fn, "input2_scale");
  check_scale(output_scale, fn, "output_scale");
  check_zero_point(input1_zero_point, fn, "input1_zero_point");
  check_zero_point(input2_zero_point, fn, "input2_zero_point");
  check_zero_point(output_zero_point, fn, "output_zero_point");
  check_activation_range(act_min, act_max, fn);
  AddParams p;
  p.left_shift = 20;
  const double twice_max = 2.0 * std::max(input1_scale, input2_scale);
  // Both <= 0.5; a scale ratio beyond 2^31 underflows to {0, 0}: that input then adds nothing.
  p.input1_multiplier = quantize_multiplier(input1_scale / twice_max);
  p.input2_multiplier = quantize_multiplier(input2_scale / twice_max);
  p.output_multiplier =
      multiplier_for(twice_max / (std::ldexp(1.0, p.left_shift) * output_scale), fn,
                     "2 * max(input1_scale, input2_scale) / (2^20 * output_scale)");
  p.input1_zero_point = input1_zero_point;
  p.input2_zero_point = input2_zero_point;
  p.output_zero_point = output_zero_point;
  p.act_min = act_min;
  p.act_max = act_max;
  return p;
}

PoolParams make_pool_params(int filter_h, int filter_w, int stride_h, int stride_w,
                            Padding padding, int32_t act_min, int32_t act_max) {
  const char* fn = "make_pool_params";
  if (filter_h < 1) detail::fail(fn, "filter_h must be >= 1, got ", filter_h);
  if (filter_w < 1) detail::fail(fn, "filter_w must be >= 1, got ", filter_w);
  if (int64_t{filter_h} * filter_w > kMaxPoolWindow) {
    detail::fail(fn, "filter_h * filter_w must be <= 2^24, got ", filter_h, " * ", filter_w);
  }
  if (stride_h < 1) detail::fail(fn, "stride_h must be >= 1, got ", stride_h);
  if (stride_w < 1) detail::fail(fn, "stride_w must be >= 1, got ", stride_w);
  if (padding.top < 0 || padding.left < 0 || padding.bottom < 0 || padding.right < 0) {
    detail::fail(fn, "padding must be >= 0, got top ", padding.top, ", left ", padding.left,
                 ", bottom ", padding.bottom, ", right ", padding.right);
  }
  check_activation_range(act_min, act_max, fn);
  PoolParams p;
  p.filter_h = filter_h;
  p.filter_w = filter_w;
  p.stride_h = stride_h;
  p.stride_w = stride_w;
  p.padding = padding;
  p.act_min = act_min;
  p.act_max = act_max;
  return p;
}

PoolParams make_global_pool_params(const Shape4& input_shape, int32_t act_min, int32_t act_max) {
  if (input_shape.h < 1 || input_shape.w < 1) {
    detail::fail("make_global_pool_params", "input_shape.h and input_shape.w must be >= 1, got ",
                 input_shape.h, " x ", input_shape.w);
  }
  return make_pool_params(input_shape.h, input_shape.w, 1, 1, {}, act_min, act_max);
}

QuantizeParams make_quantize_params(double scale, int32_t zero_point) {
  const char* fn = "make_quantize_params";
  check_scale(scale, fn, "scale");
  const float f = static_cast<float>(scale);
  if (!std::isfinite(f) || !(f > 0.0f)) {
    detail::fail(fn, "scale must be finite and > 0 as a float32, got ", scale);
  }
  check_zero_point(zero_point, fn, "zero_point");
  return {f, zero_point};
}

}  // namespace edgeqat::runtime
