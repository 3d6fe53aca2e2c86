// Fast add, average / max pooling, quantize and dequantize: the reference's arithmetic written
// as loops the compiler vectorizes (no per-ISA code), split over threads for large tensors.
#include <algorithm>
#include <cstdint>
#include <cstring>

#include "context.h"
#include "driver.h"
#include "edgeqat/runtime/checks.h"
#include "edgeqat/runtime/requantize.h"

namespace edgeqat::runtime::fast::detail {
namespace {

using runtime::detail::KernelResources;
using runtime::detail::parallel_for;
using runtime::detail::resources;
using runtime::detail::thread_count;

// Elementwise kernels split `count` into chunks of this many elements (one task each).
constexpr size_t kChunk = 32 * 1024;

// Runs body(begin, end) over [0, count), in chunks over ctx's threads when it is worth it.
template <class Body>
void for_chunks(KernelContext* ctx, size_t count, Body&& body) {
  if (ctx == nullptr || thread_count(*ctx) == 1 || count <= kChunk) {
    body(size_t{0}, count);
    return;
  }
  const auto tasks = static_cast<int>((count + kChunk - 1) / kChunk);
  parallel_for(*ctx, tasks, [&](int task, int /*thread*/) {
    const size_t begin = static_cast<size_t>(task) * kChunk;
    body(begin, std::min(count, begin + kChunk));
  });
}

// Runs row(b, oy, thread) for every output row, over ctx's threads.
template <class Row>
void for_rows(KernelContext* ctx, const Shape4& out, Row&& row) {
  const int rows = out.n * out.h;
  if (ctx == nullptr) {
    for (int r = 0; r < rows; ++r) row(r / out.h, r % out.h, 0);
    return;
  }
  parallel_for(*ctx, rows, [&](int r, int thread) { row(r / out.h, r % out.h, thread); });
}

}  // namespace

void add_isa(Isa isa_id, KernelContext* ctx, const AddParams& p, size_t count, const int8_t* input1,
             const int8_t* input2, int8_t* output) {
  check_add(p);
  const auto n = static_cast<int64_t>(count);
  check_pointer(input1, n, "add", "input1");
  check_pointer(input2, n, "add", "input2");
  check_pointer(output, n, "add", "output");
  const IsaKernels& isa = isa_kernels(isa_id);
  if (isa.add != nullptr) {
    AddArgs args{};
    args.zp1 = p.input1_zero_point;
    args.zp2 = p.input2_zero_point;
    args.left_shift = p.left_shift;
    args.m1 = p.input1_multiplier.multiplier;
    args.rs1 = 31 - p.input1_multiplier.shift;
    args.m2 = p.input2_multiplier.multiplier;
    args.rs2 = 31 - p.input2_multiplier.shift;
    args.mo = p.output_multiplier.multiplier;
    args.rso = 31 - p.output_multiplier.shift;
    args.out_min = p.act_min - p.output_zero_point;
    args.out_max = p.act_max - p.output_zero_point;
    args.zero_point = p.output_zero_point;
    for_chunks(ctx, count, [&](size_t begin, size_t end) {
      AddArgs a = args;
      a.a = input1 + begin;
      a.b = input2 + begin;
      a.out = output + begin;
      a.count = end - begin;
      isa.add(a);
    });
    return;
  }
  // The reference's scaled inputs requant((q - zp) << left_shift, m) depend on q alone: tabulate
  // them for the 256 int8 values (the same expressions, evaluated once per value).
  int32_t scaled1[256], scaled2[256];
  for (int q = kInt8Min; q <= kInt8Max; ++q) {
    const int32_t shift = int32_t{1} << p.left_shift;
    scaled1[q + 128] =
        multiply_by_quantized_multiplier((q - p.input1_zero_point) * shift, p.input1_multiplier);
    scaled2[q + 128] =
        multiply_by_quantized_multiplier((q - p.input2_zero_point) * shift, p.input2_multiplier);
  }
  for_chunks(ctx, count, [&](size_t begin, size_t end) {
    for (size_t i = begin; i < end; ++i) {
      // |scaled_i| < 2^28 (check_add): the sum fits in int32.
      const int32_t sum = scaled1[input1[i] + 128] + scaled2[input2[i] + 128];
      output[i] =
          requantize_output(sum, p.output_multiplier, p.output_zero_point, p.act_min, p.act_max);
    }
  });
}

void max_pool2d_isa(Isa isa_id, KernelContext* ctx, const PoolParams& p, const Shape4& in,
                    const int8_t* input, const Shape4& out, int8_t* output) {
  const char* fn = "max_pool2d";
  check_pool2d(p, in, out, fn);
  check_pointer(input, num_elements(in), fn, "input");
  check_pointer(output, num_elements(out), fn, "output");
  if (num_elements(out) == 0) return;
  const IsaKernels& isa = isa_kernels(isa_id);
  const int channels = in.c;
  const auto lo = static_cast<int8_t>(p.act_min), hi = static_cast<int8_t>(p.act_max);
  for_rows(ctx, out, [&](int b, int oy, int /*thread*/) {
    const int64_t sy = int64_t{oy} * p.stride_h - p.padding.top;
    const int64_t y0 = std::max<int64_t>(sy, 0), y1 = std::min<int64_t>(sy + p.filter_h, in.h);
    const int8_t* image = input + int64_t{b} * in.h * in.w * channels;
    for (int ox = 0; ox < out.w; ++ox) {
      const int64_t sx = int64_t{ox} * p.stride_w - p.padding.left;
      const int64_t x0 = std::max<int64_t>(sx, 0), x1 = std::min<int64_t>(sx + p.filter_w, in.w);
      int8_t* o = output + ((int64_t{b} * out.h + oy) * out.w + ox) * channels;
      // Windows are never empty (check_pool2d).
      const int8_t* first = image + (y0 * in.w + x0) * channels;
      const size_t row_stride = static_cast<size_t>(in.w) * channels;
      if (isa.max_window != nullptr) {
        MaxWindowArgs a{first,
                        static_cast<int>(y1 - y0),
                        static_cast<int>(x1 - x0),
                        channels,
                        row_stride,
                        lo,
                        hi,
                        o};
        isa.max_window(a);
        continue;
      }
      // Start from the first tap and take the max in place.
      std::memcpy(o, first, static_cast<size_t>(channels));
      for (int64_t y = y0; y < y1; ++y) {
        for (int64_t x = (y == y0 ? x0 + 1 : x0); x < x1; ++x) {
          const int8_t* s = image + (y * in.w + x) * channels;
          for (int c = 0; c < channels; ++c) o[c] = std::max(o[c], s[c]);
        }
      }
      for (int c = 0; c < channels; ++c) o[c] = std::min(std::max(o[c], lo), hi);
    }
  });
}

void average_pool2d_impl(KernelContext* ctx, const PoolParams& p, const Shape4& in,
                         const int8_t* input, const Shape4& out, int8_t* output) {
  const char* fn = "average_pool2d";
  check_pool2d(p, in, out, fn);
  check_pointer(input, num_elements(in), fn, "input");
  check_pointer(output, num_elements(out), fn, "output");
  if (num_elements(out) == 0) return;
  const int channels = in.c;
  KernelContext local;
  KernelContext& c = ctx ? *ctx : local;
  KernelResources& res = resources(c);
  res.thread_scratch_reserve(thread_count(c), sizeof(int32_t) * static_cast<size_t>(channels));
  for_rows(&c, out, [&](int b, int oy, int thread) {
    auto* sum = reinterpret_cast<int32_t*>(res.thread_scratch(thread));
    const int64_t sy = int64_t{oy} * p.stride_h - p.padding.top;
    const int64_t y0 = std::max<int64_t>(sy, 0), y1 = std::min<int64_t>(sy + p.filter_h, in.h);
    const int8_t* image = input + int64_t{b} * in.h * in.w * channels;
    for (int ox = 0; ox < out.w; ++ox) {
      const int64_t sx = int64_t{ox} * p.stride_w - p.padding.left;
      const int64_t x0 = std::max<int64_t>(sx, 0), x1 = std::min<int64_t>(sx + p.filter_w, in.w);
      std::fill(sum, sum + channels, 0);
      // At most 2^24 taps of |q| <= 128 (check_pool2d): the sums fit in int32.
      for (int64_t y = y0; y < y1; ++y) {
        for (int64_t x = x0; x < x1; ++x) {
          const int8_t* s = image + (y * in.w + x) * channels;
          for (int ch = 0; ch < channels; ++ch) sum[ch] += s[ch];
        }
      }
      const auto count = static_cast<int32_t>((y1 - y0) * (x1 - x0));
      const int32_t half = count / 2;
      int8_t* o = output + ((int64_t{b} * out.h + oy) * out.w + ox) * channels;
      for (int ch = 0; ch < channels; ++ch) {
        // The reference's rounding: half away from zero with C++'s truncating division.
        const int32_t s = sum[ch];
        int32_t v = s >= 0 ? (s + half) / count : (s - half) / count;
        v = std::min(std::max(v, p.act_min), p.act_max);
        o[ch] = static_cast<int8_t>(v);
      }
    }
  });
}

void quantize_isa(Isa isa_id, KernelContext* ctx, const QuantizeParams& p, size_t count,
                  const float* input, int8_t* output) {
  check_quantize_params(p, "quantize");
  const auto n = static_cast<int64_t>(count);
  check_pointer(input, n, "quantize", "input");
  check_pointer(output, n, "quantize", "output");
  const IsaKernels& isa = isa_kernels(isa_id);
  const float scale = p.scale;
  const int32_t zp = p.zero_point;
  for_chunks(ctx, count, [&](size_t begin, size_t end) {
    if (isa.quantize != nullptr) {
      isa.quantize({input + begin, end - begin, scale, zp, output + begin});
      return;
    }
    for (size_t i = begin; i < end; ++i) {
      // The reference without branches or libm calls (random data would mispredict them):
      // one float32 division; NaN -> 0 (then + zp); clamp to +-1024 (beyond saturates anyway);
      // floor by truncation and a correction (|v| <= 1024: exact); then round half to even on
      // the exact fraction v - floor(v).
      float v = input[i] / scale;
      const int32_t nan = v != v;
      v = v < -1024.0f ? -1024.0f : v;
      v = v > 1024.0f ? 1024.0f : v;
      v = nan ? 0.0f : v;
      int32_t t = static_cast<int32_t>(v);                   // toward zero
      t -= static_cast<int32_t>(static_cast<float>(t) > v);  // floor
      const float frac = v - static_cast<float>(t);          // exact, in [0, 1)
      const int32_t up = static_cast<int32_t>(frac > 0.5f) |
                         (static_cast<int32_t>(frac == 0.5f) & t);  // ties: up iff t is odd
      int32_t q = t + (up & 1) + zp;
      q = std::min(std::max(q, kInt8Min), kInt8Max);
      output[i] = static_cast<int8_t>(q);
    }
  });
}

void dequantize_impl(KernelContext* ctx, const QuantizeParams& p, size_t count, const int8_t* input,
                     float* output) {
  check_quantize_params(p, "dequantize");
  const auto n = static_cast<int64_t>(count);
  check_pointer(input, n, "dequantize", "input");
  check_pointer(output, n, "dequantize", "output");
  const float scale = p.scale;
  const int32_t zp = p.zero_point;
  for_chunks(ctx, count, [&](size_t begin, size_t end) {
    for (size_t i = begin; i < end; ++i) {
      output[i] = static_cast<float>(int32_t{input[i]} - zp) * scale;
    }
  });
}

}  // namespace edgeqat::runtime::fast::detail
