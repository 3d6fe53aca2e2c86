#include "edgeqat/runtime/checks.h"

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>

#include "error.h"

namespace edgeqat::runtime {
namespace {

void check_shape(const Shape4& s, const char* fn, const char* arg, bool allow_empty_batch) {
  if (s.n < (allow_empty_batch ? 0 : 1) || s.h < 1 || s.w < 1 || s.c < 1) {
    detail::fail(fn, arg, " must have ", allow_empty_batch ? "n >= 0 and " : "",
                 "all dimensions >= 1, got [", s.n, ", ", s.h, ", ", s.w, ", ", s.c, "]");
  }
}

void check_positive(int v, const char* fn, const char* arg) {
  if (v < 1) detail::fail(fn, arg, " must be >= 1, got ", v);
}

void check_padding(const Padding& p, const char* fn) {
  if (p.top < 0 || p.left < 0 || p.bottom < 0 || p.right < 0) {
    detail::fail(fn, "padding must be >= 0, got top ", p.top, ", left ", p.left, ", bottom ",
                 p.bottom, ", right ", p.right);
  }
}

void check_output_dim(int expected, int got, const char* fn, const char* arg) {
  if (expected != got) detail::fail(fn, arg, " must be ", expected, ", got ", got);
}

// Spatial part shared by conv and depthwise conv.
template <class Params>
void check_conv_window(const Params& p, const Shape4& in, const Shape4& filter,
                       const Shape4& out, const char* fn) {
  check_positive(p.stride_h, fn, "stride_h");
  check_positive(p.stride_w, fn, "stride_w");
  check_positive(p.dilation_h, fn, "dilation_h");
  check_positive(p.dilation_w, fn, "dilation_w");
  check_padding(p.padding, fn);
  check_zero_point(p.input_zero_point, fn, "input_zero_point");
  check_zero_point(p.output_zero_point, fn, "output_zero_point");
  check_activation_range(p.act_min, p.act_max, fn);
  if (out.n != in.n) detail::fail(fn, "output_shape.n must be ", in.n, ", got ", out.n);
  const int oh = window_output_size(in.h, filter.h, p.stride_h, p.dilation_h, p.padding.top,
                                    p.padding.bottom, fn, "h");
  const int ow = window_output_size(in.w, filter.w, p.stride_w, p.dilation_w, p.padding.left,
                                    p.padding.right, fn, "w");
  check_output_dim(oh, out.h, fn, "output_shape.h");
  check_output_dim(ow, out.w, fn, "output_shape.w");
}

}  // namespace

int window_output_size(int input, int kernel, int stride, int dilation, int pad_before,
                       int pad_after, const char* fn, const char* axis) {
  const std::string a(axis);
  if (input < 1) detail::fail(fn, "input size along ", a, " must be >= 1, got ", input);
  if (kernel < 1) detail::fail(fn, "kernel size along ", a, " must be >= 1, got ", kernel);
  if (stride < 1) detail::fail(fn, "stride_", a, " must be >= 1, got ", stride);
  if (dilation < 1) detail::fail(fn, "dilation_", a, " must be >= 1, got ", dilation);
  if (pad_before < 0 || pad_after < 0) {
    detail::fail(fn, "padding along ", a, " must be >= 0, got ", pad_before, " and ", pad_after);
  }
  const int64_t padded = int64_t{input} + pad_before + pad_after;
  const int64_t extent = (int64_t{kernel} - 1) * dilation + 1;
  if (extent > padded) {
    detail::fail(fn, "the dilated kernel along ", a, " ((", kernel, " - 1) * ", dilation,
                 " + 1 = ", extent, ") is larger than the padded input (", input, " + ",
                 pad_before, " + ", pad_after, " = ", padded, ")");
  }
  const int64_t size = (padded - extent) / stride + 1;
  if (size > std::numeric_limits<int>::max()) {
    detail::fail(fn, "output size along ", a, " overflows int: ", size);
  }
  return static_cast<int>(size);
}

void check_zero_point(int32_t zero_point, const char* fn, const char* arg) {
  if (zero_point < kInt8Min || zero_point > kInt8Max) {
    detail::fail(fn, arg, " must be in [-128, 127], got ", zero_point);
  }
}

void check_activation_range(int32_t act_min, int32_t act_max, const char* fn) {
  if (act_min < kInt8Min || act_max > kInt8Max || act_min > act_max) {
    detail::fail(fn, "activation range must satisfy -128 <= act_min <= act_max <= 127, got [",
                 act_min, ", ", act_max, "]");
  }
}

void check_pointer(const void* ptr, int64_t elements, const char* fn, const char* arg) {
  if (ptr == nullptr && elements > 0) {
    detail::fail(fn, arg, " must not be null (", elements, " elements)");
  }
}

void check_multipliers(const QuantizedMultiplier* multipliers, int count, const char* fn) {
  check_pointer(multipliers, count, fn, "multipliers");
  for (int i = 0; i < count; ++i) {
    const QuantizedMultiplier m = multipliers[i];
    if (m.multiplier < 0 || m.shift < kMinShift || m.shift > kMaxShift) {
      detail::fail(fn, "multipliers[", i, "] must have multiplier >= 0 and shift in [",
                   kMinShift, ", ", kMaxShift, "], got {", m.multiplier, ", ", m.shift, "}");
    }
  }
}

void check_conv2d(const ConvParams& p, const Shape4& in, const Shape4& filter,
                  const Shape4& out) {
  const char* fn = "conv2d";
  check_shape(in, fn, "input_shape", true);
  check_shape(filter, fn, "filter_shape", false);
  check_shape(out, fn, "output_shape", true);
  check_positive(p.groups, fn, "groups");
  if (in.c % p.groups != 0) {
    detail::fail(fn, "groups (", p.groups, ") must divide input_shape.c (", in.c, ")");
  }
  if (filter.n % p.groups != 0) {
    detail::fail(fn, "groups (", p.groups, ") must divide filter_shape.n (output channels, ",
                 filter.n, ")");
  }
  check_output_dim(in.c / p.groups, filter.c, fn, "filter_shape.c (input channels per group)");
  check_output_dim(filter.n, out.c, fn, "output_shape.c (filter_shape.n)");
  const int64_t depth = int64_t{filter.h} * filter.w * filter.c;
  if (depth > kMaxAccumulationDepth) {
    detail::fail(fn, "kernel_h * kernel_w * in_channels_per_group must be <= 65536, got ",
                 filter.h, " * ", filter.w, " * ", filter.c, " = ", depth);
  }
  check_conv_window(p, in, filter, out, fn);
}

void check_depthwise_conv2d(const DepthwiseConvParams& p, const Shape4& in, const Shape4& filter,
                            const Shape4& out) {
  const char* fn = "depthwise_conv2d";
  check_shape(in, fn, "input_shape", true);
  check_shape(filter, fn, "filter_shape", false);
  check_shape(out, fn, "output_shape", true);
  check_positive(p.depth_multiplier, fn, "depth_multiplier");
  check_output_dim(1, filter.n, fn, "filter_shape.n");
  const int64_t channels = int64_t{in.c} * p.depth_multiplier;
  if (channels != filter.c) {
    detail::fail(fn, "filter_shape.c must be input_shape.c * depth_multiplier = ", in.c, " * ",
                 p.depth_multiplier, " = ", channels, ", got ", filter.c);
  }
  check_output_dim(filter.c, out.c, fn, "output_shape.c (filter_shape.c)");
  const int64_t depth = int64_t{filter.h} * filter.w;
  if (depth > kMaxAccumulationDepth) {
    detail::fail(fn, "kernel_h * kernel_w must be <= 65536, got ", filter.h, " * ", filter.w);
  }
  check_conv_window(p, in, filter, out, fn);
}

void check_fully_connected(const FullyConnectedParams& p, const FullyConnectedShape& s) {
  const char* fn = "fully_connected";
  if (s.batch < 0) detail::fail(fn, "shape.batch must be >= 0, got ", s.batch);
  check_positive(s.in_features, fn, "shape.in_features");
  check_positive(s.out_features, fn, "shape.out_features");
  if (s.in_features > kMaxAccumulationDepth) {
    detail::fail(fn, "shape.in_features must be <= 65536, got ", s.in_features);
  }
  check_zero_point(p.input_zero_point, fn, "input_zero_point");
  check_zero_point(p.output_zero_point, fn, "output_zero_point");
  check_activation_range(p.act_min, p.act_max, fn);
}

void check_add(const AddParams& p) {
  const char* fn = "add";
  check_zero_point(p.input1_zero_point, fn, "input1_zero_point");
  check_zero_point(p.input2_zero_point, fn, "input2_zero_point");
  check_zero_point(p.output_zero_point, fn, "output_zero_point");
  check_activation_range(p.act_min, p.act_max, fn);
  // |q - zp| <= 255 < 2^8: shifted inputs stay below 2^28, and input multipliers below 1
  // (shift <= 0) keep the sum of the two scaled inputs below 2^29: no int32 overflow.
  if (p.left_shift < 0 || p.left_shift > 20) {
    detail::fail(fn, "left_shift must be in [0, 20], got ", p.left_shift);
  }
  const QuantizedMultiplier ms[3] = {p.input1_multiplier, p.input2_multiplier,
                                     p.output_multiplier};
  const char* names[3] = {"input1_multiplier", "input2_multiplier", "output_multiplier"};
  for (int i = 0; i < 3; ++i) {
    if (ms[i].multiplier < 0 || ms[i].shift < kMinShift || ms[i].shift > kMaxShift) {
      detail::fail(fn, names[i], " must have multiplier >= 0 and shift in [", kMinShift, ", ",
                   kMaxShift, "], got {", ms[i].multiplier, ", ", ms[i].shift, "}");
    }
    if (i < 2 && ms[i].shift > 0) {
      detail::fail(fn, names[i], " must be < 1 (shift <= 0), got {", ms[i].multiplier, ", ",
                   ms[i].shift, "}");
    }
  }
}

void check_pool2d(const PoolParams& p, const Shape4& in, const Shape4& out, const char* fn) {
  check_shape(in, fn, "input_shape", true);
  check_shape(out, fn, "output_shape", true);
  check_activation_range(p.act_min, p.act_max, fn);
  if (int64_t{p.filter_h} * p.filter_w > kMaxPoolWindow) {
    detail::fail(fn, "filter_h * filter_w must be <= 2^24, got ", p.filter_h, " * ", p.filter_w);
  }
  if (out.n != in.n) detail::fail(fn, "output_shape.n must be ", in.n, ", got ", out.n);
  if (out.c != in.c) detail::fail(fn, "output_shape.c must be ", in.c, ", got ", out.c);
  const int oh = window_output_size(in.h, p.filter_h, p.stride_h, 1, p.padding.top,
                                    p.padding.bottom, fn, "h");
  const int ow = window_output_size(in.w, p.filter_w, p.stride_w, 1, p.padding.left,
                                    p.padding.right, fn, "w");
  check_output_dim(oh, out.h, fn, "output_shape.h");
  check_output_dim(ow, out.w, fn, "output_shape.w");
  // Windows start at o * stride - pad; starts grow with o, so if the first window ends inside
  // the image and the last one starts inside it, every window has a tap in the image.
  if (p.padding.top >= p.filter_h || p.padding.left >= p.filter_w) {
    detail::fail(fn, "padding.top (", p.padding.top, ") must be < filter_h (", p.filter_h,
                 ") and padding.left (", p.padding.left, ") < filter_w (", p.filter_w,
                 "): a window would lie entirely in the padding");
  }
  const int64_t last_y = int64_t{oh - 1} * p.stride_h - p.padding.top;
  const int64_t last_x = int64_t{ow - 1} * p.stride_w - p.padding.left;
  if (last_y >= in.h || last_x >= in.w) {
    detail::fail(fn, "padding.bottom (", p.padding.bottom, ") / padding.right (",
                 p.padding.right, ") leave the last window entirely in the padding");
  }
}

void check_quantize_params(const QuantizeParams& p, const char* fn) {
  if (!(p.scale > 0.0f) || !std::isfinite(p.scale)) {
    detail::fail(fn, "scale must be finite and > 0, got ", p.scale);
  }
  check_zero_point(p.zero_point, fn, "zero_point");
}

}  // namespace edgeqat::runtime
