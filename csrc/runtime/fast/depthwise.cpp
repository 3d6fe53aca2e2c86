// Fast depthwise conv2d: a direct kernel per output row, vectorized over the NHWC channels by
// the selected ISA (isa.h); rows are split over threads.
#include <algorithm>
#include <cstdint>
#include <cstring>

#include "../error.h"
#include "context.h"
#include "driver.h"
#include "edgeqat/runtime/checks.h"
#include "edgeqat/runtime/fast.h"

namespace edgeqat::runtime::fast::detail {
namespace {

using runtime::detail::fail;
using runtime::detail::KernelResources;
using runtime::detail::parallel_for;
using runtime::detail::resources;
using runtime::detail::thread_count;

// Depthwise weights as int16 [kh * kw][cp], cp = channels rounded up to 64 (zero padding), so
// that every ISA loads whole vectors. The products w * (q - zp) are at most 128 * 255 = 32640
// in magnitude: exact in int16 lanes too.
int padded_channels(int channels) { return (channels + 63) / 64 * 64; }

void pack_weights(const Shape4& fs, const int8_t* filter, int16_t* dst) {
  const int cp = padded_channels(fs.c);
  for (int t = 0; t < fs.h * fs.w; ++t) {
    for (int c = 0; c < cp; ++c) {
      dst[static_cast<size_t>(t) * cp + c] =
          c < fs.c ? filter[static_cast<size_t>(t) * fs.c + c] : int16_t{0};
    }
  }
}

void depthwise_run(const IsaKernels& isa, KernelContext* ctx, const DepthwiseConvParams& p,
                   const QuantizedMultiplier* multipliers, const Shape4& in, const int8_t* input,
                   const Shape4& fs, const int16_t* weights, const int32_t* bias, const Shape4& out,
                   int8_t* output) {
  KernelContext local;
  KernelContext& c = ctx ? *ctx : local;
  KernelResources& res = resources(c);
  const OutputStage stage =
      make_output_stage(res.shared(0, output_stage_bytes(out.c)), out.c, multipliers, bias, nullptr,
                        p.input_zero_point, p.output_zero_point, p.act_min, p.act_max);
  const int channels = out.c;  // in.c * depth_multiplier
  const int8_t* src = input;
  if (p.depth_multiplier > 1) {
    // Output channel oc reads input channel oc / depth_multiplier: repeat every input channel
    // depth_multiplier times, then it is a multiplier-1 depthwise conv.
    const int dm = p.depth_multiplier;
    const int64_t pixels = int64_t{in.n} * in.h * in.w;
    auto* expanded = reinterpret_cast<int8_t*>(
        res.shared(3, static_cast<size_t>(pixels) * static_cast<size_t>(channels)));
    for (int64_t px = 0; px < pixels; ++px) {
      const int8_t* s = input + px * in.c;
      int8_t* d = expanded + px * channels;
      for (int ic = 0; ic < in.c; ++ic) std::memset(d + ic * dm, s[ic], static_cast<size_t>(dm));
    }
    src = expanded;
  }
  const int cp = padded_channels(channels);
  const int threads = thread_count(c);
  res.thread_scratch_reserve(threads, static_cast<size_t>(cp) * sizeof(int32_t));
  const int64_t image = int64_t{in.h} * in.w * channels;
  const int rows = out.n * out.h;
  parallel_for(c, rows, [&](int task, int thread) {
    const int b = task / out.h, oy = task % out.h;
    DepthwiseRowArgs a{};
    a.input = src + b * image;
    a.in_h = in.h;
    a.in_w = in.w;
    a.channels = channels;
    a.weights = weights;
    a.kh = fs.h;
    a.kw = fs.w;
    a.cp = cp;
    a.oy = oy;
    a.out_w = out.w;
    a.stride_h = p.stride_h;
    a.stride_w = p.stride_w;
    a.dilation_h = p.dilation_h;
    a.dilation_w = p.dilation_w;
    a.pad_top = p.padding.top;
    a.pad_left = p.padding.left;
    a.input_zero_point = p.input_zero_point;
    a.output = output + (int64_t{b} * out.h + oy) * out.w * channels;
    a.acc = reinterpret_cast<int32_t*>(res.thread_scratch(thread));
    a.stage = &stage;
    isa.depthwise_row(a);
  });
}

void check_depthwise(const DepthwiseConvParams& p, const QuantizedMultiplier* multipliers,
                     const Shape4& in, const int8_t* input, const Shape4& fs, const int8_t* filter,
                     bool check_filter, const Shape4& out, const int8_t* output) {
  check_depthwise_conv2d(p, in, fs, out);
  check_multipliers(multipliers, out.c, "depthwise_conv2d");
  check_pointer(input, num_elements(in), "depthwise_conv2d", "input");
  if (check_filter) check_pointer(filter, num_elements(fs), "depthwise_conv2d", "filter");
  check_pointer(output, num_elements(out), "depthwise_conv2d", "output");
}

}  // namespace

void depthwise_conv2d_isa(Isa isa, KernelContext* ctx, const DepthwiseConvParams& p,
                          const QuantizedMultiplier* multipliers, const Shape4& in,
                          const int8_t* input, const Shape4& fs, const int8_t* filter,
                          const int32_t* bias, const Shape4& out, int8_t* output) {
  check_depthwise(p, multipliers, in, input, fs, filter, true, out, output);
  if (num_elements(out) == 0) return;
  KernelContext local;
  KernelContext& c = ctx ? *ctx : local;
  auto* weights = reinterpret_cast<int16_t*>(resources(c).shared(
      1, sizeof(int16_t) * static_cast<size_t>(fs.h) * fs.w * padded_channels(fs.c)));
  pack_weights(fs, filter, weights);
  depthwise_run(isa_kernels(isa), &c, p, multipliers, in, input, fs, weights, bias, out, output);
}

}  // namespace edgeqat::runtime::fast::detail

namespace edgeqat::runtime::fast {

PackedDepthwiseConv2d pack_depthwise_conv2d(const DepthwiseConvParams& params, const Shape4& fs,
                                            const int8_t* filter, const std::string& isa) {
  const char* fn = "pack_depthwise_conv2d";
  const detail::Isa id = detail::isa_from_name(isa, fn);
  if (fs.n != 1 || fs.h < 1 || fs.w < 1 || fs.c < 1) {
    runtime::detail::fail(fn, "filter_shape must be [1, kh >= 1, kw >= 1, c >= 1], got [", fs.n,
                          ", ", fs.h, ", ", fs.w, ", ", fs.c, "]");
  }
  if (params.depth_multiplier < 1 || fs.c % params.depth_multiplier != 0) {
    runtime::detail::fail(fn, "depth_multiplier (", params.depth_multiplier,
                          ") must be >= 1 and divide filter_shape.c (", fs.c, ")");
  }
  if (int64_t{fs.h} * fs.w > kMaxAccumulationDepth) {
    runtime::detail::fail(fn, "kernel_h * kernel_w must be <= 65536, got ", fs.h, " * ", fs.w);
  }
  check_pointer(filter, num_elements(fs), fn, "filter");
  PackedDepthwiseConv2d packed;
  packed.isa = detail::isa_name(id);
  packed.filter_shape = fs;
  packed.channels_padded = detail::padded_channels(fs.c);
  packed.weights.assign(static_cast<size_t>(fs.h) * fs.w * packed.channels_padded, 0);
  detail::pack_weights(fs, filter, packed.weights.data());
  return packed;
}

void depthwise_conv2d_packed(KernelContext* ctx, const DepthwiseConvParams& p,
                             const QuantizedMultiplier* multipliers,
                             const PackedDepthwiseConv2d& packed, const Shape4& in,
                             const int8_t* input, const int32_t* bias, const Shape4& out,
                             int8_t* output) {
  if (packed.weights.empty()) {
    runtime::detail::fail("depthwise_conv2d_packed",
                          "the packed weights are empty (not made by pack_depthwise_conv2d)");
  }
  detail::check_depthwise(p, multipliers, in, input, packed.filter_shape, nullptr, false, out,
                          output);
  const detail::Isa isa = detail::isa_from_name(packed.isa, "depthwise_conv2d_packed");
  if (num_elements(out) == 0) return;
  detail::depthwise_run(detail::isa_kernels(isa), ctx, p, multipliers, in, input,
                        packed.filter_shape, packed.weights.data(), bias, out, output);
}

}  // namespace edgeqat::runtime::fast
