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

int padded_channels(int channels) { return (channels + 63) / 64 * 64; }

// Bytes of the packed weights of `taps` x `channels` in `layout` (isa.h).
size_t packed_bytes(int layout, int taps, int channels) {
  const size_t cp = static_cast<size_t>(padded_channels(channels));
  if (layout == kDepthwiseVnni) return cp * 4 * static_cast<size_t>((taps + 3) / 4);
  return cp * static_cast<size_t>(taps) * sizeof(int16_t);
}

// filter [taps][channels] (the 1HWO filter) into `layout`; weight_sums[c] = sum_t w[t][c].
void pack_weights(int layout, const int8_t* filter, int taps, int channels, uint8_t* dst,
                  int32_t* weight_sums) {
  const int cp = padded_channels(channels);
  std::memset(dst, 0, packed_bytes(layout, taps, channels));
  for (int c = 0; c < channels; ++c) {
    int32_t sum = 0;  // at most 65536 * 128 in magnitude
    for (int t = 0; t < taps; ++t) sum += filter[static_cast<size_t>(t) * channels + c];
    weight_sums[c] = sum;
  }
  if (layout == kDepthwiseInt16) {
    auto* w = reinterpret_cast<int16_t*>(dst);
    for (int t = 0; t < taps; ++t) {
      for (int c = 0; c < channels; ++c) {
        w[static_cast<size_t>(t) * cp + c] = filter[static_cast<size_t>(t) * channels + c];
      }
    }
    return;
  }
  // kDepthwiseVnni: block b of 64 channels, tap group g, vector j, lane l, tap i. With at most
  // 32 channels, channels 32..63 of the block repeat channels 0..31 (two pixels per vector).
  const int groups = (taps + 3) / 4;
  const int slots = channels <= 32 ? 64 : channels;
  for (int slot = 0; slot < slots; ++slot) {
    const int c = channels <= 32 ? slot % 32 : slot;
    if (c >= channels) continue;
    const int b = slot / 64, within = slot % 64;
    const int lane128 = within / 16, j = (within % 16) / 4, s = within % 4;
    const int l = lane128 * 4 + s;
    for (int t = 0; t < taps; ++t) {
      const int g = t / 4, i = t % 4;
      const size_t at = ((static_cast<size_t>(b) * groups + g) * 4 + j) * 64 + l * 4 + i;
      dst[at] = static_cast<uint8_t>(filter[static_cast<size_t>(t) * channels + c]);
    }
  }
}

void depthwise_run(const IsaKernels& isa, KernelContext* ctx, const DepthwiseConvParams& p,
                   const QuantizedMultiplier* multipliers, const Shape4& in, const int8_t* input,
                   const Shape4& fs, const uint8_t* weights, const int32_t* weight_sums,
                   const int32_t* bias, const Shape4& out, int8_t* output) {
  KernelContext local;
  KernelContext& c = ctx ? *ctx : local;
  KernelResources& res = resources(c);
  const int taps = fs.h * fs.w;
  OutputStage stage =
      make_output_stage(res.shared(0, output_stage_bytes(out.c)), out.c, multipliers, bias,
                        isa.dw_layout == kDepthwiseVnni ? weight_sums : nullptr, p.input_zero_point,
                        p.output_zero_point, p.act_min, p.act_max, taps);
  if (isa.dw_layout == kDepthwiseVnni && out.c <= 32) {
    // The kernel's two-pixel path reads channels 32..63 of the stage as a copy of 0..31 (the
    // arrays live in this call's scratch).
    for (const int32_t* array : {stage.offset, stage.bias, stage.multiplier, stage.right_shift}) {
      auto* a = const_cast<int32_t*>(array);
      std::memcpy(a + 32, a, sizeof(int32_t) * static_cast<size_t>(out.c));
    }
  }
  prepare_output_stage(
      isa.prepare_depthwise_stage,
      res.shared(4, static_cast<size_t>(padded_channels(out.c)) * kPreparedBytesPerChannel), 1,
      out.c, stage);
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
  const int threads = thread_count(c, int64_t{out.n} * out.h * out.w * cp * taps);
  res.thread_scratch_reserve(threads, depthwise_scratch_bytes(taps, cp));
  const int64_t image = int64_t{in.h} * in.w * channels;
  // Tasks: output rows, and with several threads and few rows also blocks of 64 channels, so
  // that small late layers (7x7 outputs) still split evenly.
  const int rows = out.n * out.h;
  const int blocks = cp / 64;
  int split = 1;
  if (threads > 1 && rows < 8 * threads) split = std::min(blocks, (8 * threads + rows - 1) / rows);
  const int per_split = (blocks + split - 1) / split;
  split = (blocks + per_split - 1) / per_split;
  parallel_for(c, threads, rows * split, [&](int task, int thread) {
    const int row = task / split, part = task % split;
    const int b = row / out.h, oy = row % out.h;
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
    a.c_begin = part * per_split * 64;
    a.c_end = std::min(channels, (part + 1) * per_split * 64);
    a.scratch = res.thread_scratch(thread);
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

void depthwise_conv2d_isa(Isa isa_id, KernelContext* ctx, const DepthwiseConvParams& p,
                          const QuantizedMultiplier* multipliers, const Shape4& in,
                          const int8_t* input, const Shape4& fs, const int8_t* filter,
                          const int32_t* bias, const Shape4& out, int8_t* output) {
  check_depthwise(p, multipliers, in, input, fs, filter, true, out, output);
  if (num_elements(out) == 0) return;
  KernelContext local;
  KernelContext& c = ctx ? *ctx : local;
  KernelResources& res = resources(c);
  const IsaKernels& isa = isa_kernels(isa_id);
  const int taps = fs.h * fs.w;
  uint8_t* weights = res.shared(1, packed_bytes(isa.dw_layout, taps, fs.c));
  auto* sums = reinterpret_cast<int32_t*>(res.shared(2, sizeof(int32_t) * fs.c));
  pack_weights(isa.dw_layout, filter, taps, fs.c, weights, sums);
  depthwise_run(isa, &c, p, multipliers, in, input, fs, weights, sums, bias, out, output);
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
  const int layout = detail::isa_kernels(id).dw_layout;
  PackedDepthwiseConv2d packed;
  packed.isa = detail::isa_name(id);
  packed.filter_shape = fs;
  packed.data.assign(detail::packed_bytes(layout, fs.h * fs.w, fs.c), 0);
  packed.weight_sums.assign(static_cast<size_t>(fs.c), 0);
  detail::pack_weights(layout, filter, fs.h * fs.w, fs.c, packed.data.data(),
                       packed.weight_sums.data());
  return packed;
}

void depthwise_conv2d_packed(KernelContext* ctx, const DepthwiseConvParams& p,
                             const QuantizedMultiplier* multipliers,
                             const PackedDepthwiseConv2d& packed, const Shape4& in,
                             const int8_t* input, const int32_t* bias, const Shape4& out,
                             int8_t* output) {
  if (packed.data.empty()) {
    runtime::detail::fail("depthwise_conv2d_packed",
                          "the packed weights are empty (not made by pack_depthwise_conv2d)");
  }
  detail::check_depthwise(p, multipliers, in, input, packed.filter_shape, nullptr, false, out,
                          output);
  const detail::Isa isa = detail::isa_from_name(packed.isa, "depthwise_conv2d_packed");
  if (num_elements(out) == 0) return;
  detail::depthwise_run(detail::isa_kernels(isa), ctx, p, multipliers, in, input,
                        packed.filter_shape, packed.data.data(), packed.weight_sums.data(), bias,
                        out, output);
}

}  // namespace edgeqat::runtime::fast
