// Fast conv2d and fully connected: im2col + the int8 GEMM of the selected ISA (isa.h), with the
// reference's output stage. ISA-independent: packing, blocking and threads.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>

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

template <class T>
T round_up(T v, T m) {
  return (v + m - 1) / m * m;
}
template <class T>
T ceil_div(T v, T m) {
  return (v + m - 1) / m;
}

// Bytes of A (im2col rows) one task packs and keeps in L2 while it sweeps the B panels.
constexpr size_t kABlockBytes = 96 * 1024;

// The A row formats of isa.h.
//   a_elem 1: u8 = q + 128 (q ^ 0x80); padding taps q = zp, i.e. zp + 128.
//   a_elem 2: int16 q - zp; padding taps 0.
inline uint8_t convert1(int8_t q, uint8_t*, int32_t /*zp*/) {
  return static_cast<uint8_t>(static_cast<uint8_t>(q) ^ 0x80u);
}
inline int16_t convert1(int8_t q, int16_t*, int32_t zp) { return static_cast<int16_t>(q - zp); }
inline uint8_t pad_value(uint8_t*, int32_t zp) { return static_cast<uint8_t>(zp + 128); }
inline int16_t pad_value(int16_t*, int32_t /*zp*/) { return 0; }

// 16 values at once (a fixed-size loop the compiler turns into one or two vector operations).
template <class T>
inline void convert16(const int8_t* src, T* dst, int32_t zp) {
  T tmp[16];
  for (int i = 0; i < 16; ++i) tmp[i] = convert1(src[i], dst, zp);
  std::memcpy(dst, tmp, sizeof(tmp));
}

// dst[0, n) = the A format of src[0, n), in 16-value chunks. A short run (n < 16) is done as one
// chunk when 16 bytes from src stay inside the input (src_end): it then writes up to 15 values
// past n, which the callers allow (they write A rows front to back, pad each row's end
// afterwards, and keep 64 bytes of slack after the block).
template <class T>
inline void convert(const int8_t* src, int n, T* dst, int32_t zp, const int8_t* src_end) {
  if (n >= 16) {
    int i = 0;
    for (; i + 16 <= n; i += 16) convert16(src + i, dst + i, zp);
    if (i < n) convert16(src + n - 16, dst + n - 16, zp);  // the last chunk overlaps
    return;
  }
  if (src_end - src >= 16) {
    convert16(src, dst, zp);
    return;
  }
  for (int i = 0; i < n; ++i) dst[i] = convert1(src[i], dst, zp);
}

// Plain conversion of n values (no over-read, no over-write).
template <class T>
inline void convert(const int8_t* src, int n, T* dst, int32_t zp) {
  for (int i = 0; i < n; ++i) dst[i] = convert1(src[i], dst, zp);
}

struct ConvJob {
  const ConvParams* p;
  Shape4 in, fs, out;
  const int8_t* input;
  int depth, depth_padded;
  bool direct;  // 1x1, stride 1, no padding: the rows of A are the input pixels
};

// Packs rows [m0, m0 + rows) of group g's im2col matrix into dst (row stride depth_padded,
// at least 64 bytes of slack after the block).
template <class T>
void pack_a(const ConvJob& j, int g, int64_t m0, int rows, T* dst) {
  const ConvParams& p = *j.p;
  const int32_t zp = p.input_zero_point;
  const T pad = pad_value(dst, zp);
  const int cin_g = j.fs.c, kp = j.depth_padded;
  const int64_t channel0 = int64_t{g} * cin_g;
  const int8_t* input_end = j.input + num_elements(j.in);
  if (j.direct) {
    if (p.groups == 1 && kp == cin_g) {  // the block is one contiguous run of the input
      convert(j.input + m0 * j.in.c, rows * cin_g, dst, zp, input_end);
      return;
    }
    for (int r = 0; r < rows; ++r) {
      T* row = dst + static_cast<size_t>(r) * kp;
      convert(j.input + (m0 + r) * j.in.c + channel0, cin_g, row, zp, input_end);
      std::fill(row + cin_g, row + kp, T{0});
    }
    return;
  }
  const int kh = j.fs.h, kw = j.fs.w;
  const int64_t line_stride = int64_t{j.in.w} * j.in.c;
  // A whole filter row of taps is one contiguous run of the input when the taps are adjacent
  // (dilation 1) and read every channel (one group).
  const bool contiguous_rows = p.dilation_w == 1 && p.groups == 1;
  constexpr int kMaxLines = 16;  // filter heights up to this keep their input lines in an array
  const int8_t* lines[kMaxLines];
  int64_t m = m0;
  T* d = dst;
  for (int left = rows; left > 0;) {
    // A run of outputs along one output row: the input lines of the taps are the same.
    const int64_t ox0 = m % j.out.w;
    const int64_t oy = (m / j.out.w) % j.out.h;
    const int64_t b = m / (int64_t{j.out.w} * j.out.h);
    const int run = static_cast<int>(std::min<int64_t>(left, j.out.w - ox0));
    const int8_t* image = j.input + b * j.in.h * line_stride + channel0;
    const int64_t y0 = oy * p.stride_h - p.padding.top;
    auto line_of = [&](int ky) -> const int8_t* {  // null: a padding row of taps
      const int64_t iy = y0 + int64_t{ky} * p.dilation_h;
      return iy < 0 || iy >= j.in.h ? nullptr : image + iy * line_stride;
    };
    for (int ky = 0; ky < kh && ky < kMaxLines; ++ky) lines[ky] = line_of(ky);
    for (int i = 0; i < run; ++i, d += kp) {
      T* t = d;
      const int64_t x0 = (ox0 + i) * p.stride_w - p.padding.left;
      const bool inside_x = contiguous_rows && x0 >= 0 && x0 + kw <= j.in.w;
      for (int ky = 0; ky < kh; ++ky) {
        const int8_t* line = ky < kMaxLines ? lines[ky] : line_of(ky);
        if (line == nullptr) {  // all zero point
          std::fill(t, t + static_cast<size_t>(kw) * cin_g, pad);
          t += static_cast<size_t>(kw) * cin_g;
        } else if (inside_x) {
          convert(line + x0 * j.in.c, kw * cin_g, t, zp, input_end);
          t += static_cast<size_t>(kw) * cin_g;
        } else {
          for (int kx = 0; kx < kw; ++kx, t += cin_g) {
            const int64_t ix = x0 + int64_t{kx} * p.dilation_w;
            if (ix < 0 || ix >= j.in.w) {
              std::fill(t, t + cin_g, pad);
            } else {
              convert(line + ix * j.in.c, cin_g, t, zp, input_end);
            }
          }
        }
      }
      std::fill(t, d + kp, T{0});  // depth padding
    }
    m += run;
    left -= run;
  }
}

}  // namespace

PackedSizes packed_sizes(const IsaKernels& isa, int groups, int n, int depth) {
  const int kp = round_up(depth, isa.kgroup);
  const size_t np = static_cast<size_t>(round_up(n, isa.n_unit));
  const size_t stride = round_up<size_t>(np * kp * isa.a_elem, 64);
  return {kp, stride, stride * static_cast<size_t>(groups)};
}

void pack_gemm_weights(const IsaKernels& isa, const int8_t* w, int groups, int n, int depth,
                       const PackedSizes& sizes, uint8_t* dst, int32_t* weight_sums) {
  const int kp = sizes.depth_padded, kg = isa.kgroup;
  const int np = round_up(n, isa.n_unit);
  const int full = depth / kg, rest = depth % kg;  // whole depth groups, then a partial one
  for (int g = 0; g < groups; ++g) {
    uint8_t* gdst = dst + static_cast<size_t>(g) * sizes.group_stride;
    std::memset(gdst, 0, sizes.group_stride);
    for (int j0 = 0; j0 < np; j0 += isa.panel) {
      const int width = std::min(isa.panel, np - j0);
      for (int nn = 0; nn < width && j0 + nn < n; ++nn) {
        const int8_t* src = w + (static_cast<size_t>(g) * n + j0 + nn) * depth;
        if (weight_sums) {
          // At most 65536 * 128 in magnitude: fits in int32.
          int32_t sum = 0;
          for (int k = 0; k < depth; ++k) sum += src[k];
          weight_sums[static_cast<size_t>(g) * n + j0 + nn] = sum;
        }
        // Channel nn's depth group q goes to element (q * width + nn) * kg of the panel.
        const size_t stride = static_cast<size_t>(width) * kg;
        if (isa.a_elem == 1) {
          uint8_t* d = gdst + static_cast<size_t>(j0) * kp + static_cast<size_t>(nn) * kg;
          // (a_elem 1 is the VNNI layout: kg == 4.)
          for (int q = 0; q < full; ++q) std::memcpy(d + q * stride, src + q * 4, 4);
          for (int r = 0; r < rest; ++r)
            d[full * stride + r] = static_cast<uint8_t>(src[full * kg + r]);
        } else {
          int16_t* d = reinterpret_cast<int16_t*>(gdst) + static_cast<size_t>(j0) * kp +
                       static_cast<size_t>(nn) * kg;
          for (int q = 0; q < full; ++q) {
            for (int r = 0; r < kg; ++r) d[q * stride + r] = src[q * kg + r];
          }
          for (int r = 0; r < rest; ++r) d[full * stride + r] = src[full * kg + r];
        }
      }
    }
  }
}

OutputStage make_output_stage(uint8_t* scratch, int channels, const QuantizedMultiplier* m,
                              const int32_t* bias, const int32_t* weight_sums,
                              int32_t input_zero_point, int32_t output_zero_point, int32_t act_min,
                              int32_t act_max, int64_t depth) {
  const size_t n = static_cast<size_t>(channels) + 64;
  auto* offset = reinterpret_cast<int32_t*>(scratch);
  int32_t* b = offset + n;
  int32_t* mult = b + n;
  int32_t* shift = mult + n;
  // The VNNI GEMM sums (q + 128) * w; subtracting (128 + zp) * sum_k w leaves sum (q - zp) * w.
  // Computed mod 2^32 like the GEMM's accumulator: the final sum is exact because its true
  // value fits in int32 (types.h: kMaxAccumulationDepth).
  const auto correction = static_cast<uint32_t>(-(128 + input_zero_point));
  for (size_t c = 0; c < n; ++c) {
    const bool real = c < static_cast<size_t>(channels);
    offset[c] = real && weight_sums
                    ? static_cast<int32_t>(correction * static_cast<uint32_t>(weight_sums[c]))
                    : 0;
    b[c] = real && bias ? bias[c] : 0;
    mult[c] = real ? m[c].multiplier : 0;
    shift[c] = real ? 31 - m[c].shift : 31;
  }
  // |sum of products| <= 32640 * depth: a bias farther than that from the int32 limits cannot
  // make the sum overflow, and the kernels can skip the saturation.
  const int64_t headroom = std::numeric_limits<int32_t>::max() - int64_t{32640} * depth;
  int32_t saturates = 0;
  for (int c = 0; bias && c < channels; ++c) {
    if (bias[c] > headroom || -int64_t{bias[c]} > headroom) saturates = 1;
  }
  OutputStage stage{};
  stage.offset = offset;
  stage.bias = b;
  stage.multiplier = mult;
  stage.right_shift = shift;
  stage.out_min = act_min - output_zero_point;
  stage.out_max = act_max - output_zero_point;
  stage.zero_point = output_zero_point;
  stage.bias_saturates = saturates;
  stage.narrow = 1;
  for (int c = 0; c < channels; ++c) {
    if (m[c].shift > 0) stage.narrow = 0;
  }
  stage.prepared = nullptr;
  return stage;
}

void prepare_output_stage(PrepareStageFn prepare, uint8_t* scratch, int groups,
                          int channels_per_group, OutputStage& stage) {
  if (prepare == nullptr) return;
  const int per_group = round_up(channels_per_group, 64);
  for (int g = 0; g < groups; ++g) {
    OutputStage sg = stage;
    const int64_t ch0 = int64_t{g} * channels_per_group;
    sg.offset += ch0;
    sg.bias += ch0;
    sg.multiplier += ch0;
    sg.right_shift += ch0;
    prepare(sg, per_group, scratch + static_cast<size_t>(g) * per_group * kPreparedBytesPerChannel);
  }
  stage.prepared = scratch;
}

void conv2d_gemm(KernelContext* ctx, const ConvParams& p, const QuantizedMultiplier* multipliers,
                 const Shape4& in, const int8_t* input, const Shape4& filter_shape,
                 const GemmWeightsView& w, const int32_t* bias, const Shape4& out, int8_t* output) {
  const int64_t m_total = int64_t{out.n} * out.h * out.w;
  if (m_total == 0) return;
  KernelContext local;
  KernelContext& c = ctx ? *ctx : local;
  KernelResources& res = resources(c);
  const IsaKernels& isa = *w.isa;
  const int groups = p.groups, cout_g = w.n;
  OutputStage stage =
      make_output_stage(res.shared(0, output_stage_bytes(out.c)), out.c, multipliers, bias,
                        isa.a_elem == 1 ? w.weight_sums : nullptr, p.input_zero_point,
                        p.output_zero_point, p.act_min, p.act_max, w.depth);
  const size_t prepared_per_group =
      static_cast<size_t>(round_up(cout_g, 64)) * kPreparedBytesPerChannel;
  prepare_output_stage(isa.prepare_stage, res.shared(4, prepared_per_group * groups), groups,
                       cout_g, stage);

  const ConvJob job{&p,
                    in,
                    filter_shape,
                    out,
                    input,
                    w.depth,
                    w.depth_padded,
                    filter_shape.h == 1 && filter_shape.w == 1 && p.stride_h == 1 &&
                        p.stride_w == 1 && p.padding.top == 0 && p.padding.left == 0 &&
                        p.padding.bottom == 0 && p.padding.right == 0};
  const size_t lda = static_cast<size_t>(w.depth_padded) * isa.a_elem;

  // Blocking: a task packs `mc` rows of A (about kABlockBytes, kept in L2) and multiplies them
  // by a range of B panels. With several threads, at least ~4 row blocks per thread (balance);
  // too few rows (small images, fully connected) also split the output channels.
  const int threads = thread_count(c, m_total * groups * cout_g * w.depth);
  const int64_t mr = isa.mr;
  int64_t mc = std::max<int64_t>(mr, static_cast<int64_t>(kABlockBytes / lda) / mr * mr);
  mc = std::min(mc, round_up(m_total, mr));
  if (threads > 1 && ceil_div(m_total, mc) < 4 * threads) {
    mc = std::max(mr, round_up(ceil_div(m_total, int64_t{4} * threads), mr));
  }
  // Keep the task count well inside int.
  mc = std::max(mc, round_up(ceil_div(m_total, int64_t{1} << 24), mr));
  const int64_t m_blocks = ceil_div(m_total, mc);
  const int n_panels = ceil_div(cout_g, isa.panel);
  int n_split = 1;
  if (threads > 1 && groups * m_blocks < 2 * threads) {
    n_split = static_cast<int>(
        std::min<int64_t>(n_panels, ceil_div<int64_t>(2 * threads, groups * m_blocks)));
  }
  const int panels_per_split = ceil_div(n_panels, n_split);
  n_split = ceil_div(n_panels, panels_per_split);
  const auto tasks = static_cast<int>(int64_t{groups} * m_blocks * n_split);

  res.thread_scratch_reserve(threads, static_cast<size_t>(mc) * lda + 64);
  parallel_for(c, threads, tasks, [&](int task, int thread) {
    const int split = task % n_split;
    const int64_t rest = task / n_split;
    const int64_t mb = rest % m_blocks;
    const int g = static_cast<int>(rest / m_blocks);
    const int64_t m0 = mb * mc;
    const int rows = static_cast<int>(std::min(mc, m_total - m0));
    uint8_t* a = res.thread_scratch(thread);
    if (isa.a_elem == 1) {
      pack_a(job, g, m0, rows, a);
    } else {
      pack_a(job, g, m0, rows, reinterpret_cast<int16_t*>(a));
    }
    const int64_t ch0 = int64_t{g} * cout_g;
    OutputStage sg = stage;
    sg.offset += ch0;
    sg.bias += ch0;
    sg.multiplier += ch0;
    sg.right_shift += ch0;
    if (sg.prepared)
      sg.prepared = static_cast<const uint8_t*>(sg.prepared) + g * prepared_per_group;
    GemmArgs args{};
    args.a = a;
    args.lda = lda;
    args.m = rows;
    args.b = w.data + static_cast<size_t>(g) * w.group_stride;
    args.kp = w.depth_padded;
    args.n_begin = split * panels_per_split * isa.panel;
    args.n_end = std::min(cout_g, (split + 1) * panels_per_split * isa.panel);
    args.n_total = cout_g;
    args.c = output + m0 * out.c + ch0;
    args.ldc = static_cast<size_t>(out.c);
    args.stage = &sg;
    isa.gemm(args);
  });
}

void conv2d_isa(Isa isa_id, KernelContext* ctx, const ConvParams& p,
                const QuantizedMultiplier* multipliers, const Shape4& in, const int8_t* input,
                const Shape4& fs, const int8_t* filter, const int32_t* bias, const Shape4& out,
                int8_t* output) {
  check_conv2d(p, in, fs, out);
  check_multipliers(multipliers, out.c, "conv2d");
  check_pointer(input, num_elements(in), "conv2d", "input");
  check_pointer(filter, num_elements(fs), "conv2d", "filter");
  check_pointer(output, num_elements(out), "conv2d", "output");
  if (num_elements(out) == 0) return;

  KernelContext local;
  KernelContext& c = ctx ? *ctx : local;
  KernelResources& res = resources(c);
  const IsaKernels& isa = isa_kernels(isa_id);
  const int cout_g = fs.n / p.groups, depth = fs.h * fs.w * fs.c;
  const PackedSizes sizes = packed_sizes(isa, p.groups, cout_g, depth);
  uint8_t* packed = res.shared(1, sizes.bytes);
  auto* sums = reinterpret_cast<int32_t*>(res.shared(2, sizeof(int32_t) * fs.n));
  pack_gemm_weights(isa, filter, p.groups, cout_g, depth, sizes, packed, sums);
  const GemmWeightsView view{&isa,   packed, sizes.group_stride, p.groups,
                             cout_g, depth,  sizes.depth_padded, sums};
  conv2d_gemm(&c, p, multipliers, in, input, fs, view, bias, out, output);
}

namespace {

void fully_connected_gemv(const IsaKernels& isa, KernelContext& c, const FullyConnectedParams& p,
                          const QuantizedMultiplier* multipliers, const FullyConnectedShape& s,
                          const int8_t* input, const int8_t* filter, const int32_t* bias,
                          int8_t* output) {
  KernelResources& res = resources(c);
  const int depth = s.in_features, n = s.out_features;
  // A in the ISA's format, rows zero-padded to a multiple of 64 bytes (the kernels read whole
  // vectors; the weights beyond depth are masked to zero).
  const size_t lda = round_up<size_t>(static_cast<size_t>(depth) * isa.a_elem, 64);
  uint8_t* a = res.shared(1, lda * static_cast<size_t>(s.batch));
  std::memset(a, 0, lda * static_cast<size_t>(s.batch));
  for (int r = 0; r < s.batch; ++r) {
    const int8_t* x = input + static_cast<size_t>(r) * depth;
    if (isa.a_elem == 1) {
      convert(x, depth, a + r * lda, p.input_zero_point);
    } else {
      convert(x, depth, reinterpret_cast<int16_t*>(a + r * lda), p.input_zero_point);
    }
  }
  // No offsets: the gemv kernel applies the u8 correction itself.
  OutputStage stage =
      make_output_stage(res.shared(0, output_stage_bytes(n)), n, multipliers, bias, nullptr,
                        p.input_zero_point, p.output_zero_point, p.act_min, p.act_max, depth);
  prepare_output_stage(
      isa.prepare_stage,
      res.shared(4, static_cast<size_t>(round_up(n, 64)) * kPreparedBytesPerChannel), 1, n, stage);
  // Threads split the output channels in blocks of 64.
  const int threads = thread_count(c, int64_t{s.batch} * n * depth);
  const int tasks = threads > 1 ? ceil_div(n, 64) : 1;
  const int per_task = threads > 1 ? 64 : round_up(n, 64);
  parallel_for(c, threads, tasks, [&](int task, int /*thread*/) {
    GemvArgs g{};
    g.a = a;
    g.lda = lda;
    g.m = s.batch;
    g.w = filter;
    g.depth = depth;
    g.n_begin = task * per_task;
    g.n_end = std::min(n, (task + 1) * per_task);
    g.input_zero_point = p.input_zero_point;
    g.c = output;
    g.ldc = static_cast<size_t>(n);
    g.stage = &stage;
    isa.gemv(g);
  });
}

}  // namespace

void fully_connected_isa(Isa isa_id, KernelContext* ctx, const FullyConnectedParams& p,
                         const QuantizedMultiplier* multipliers, const FullyConnectedShape& s,
                         const int8_t* input, const int8_t* filter, const int32_t* bias,
                         int8_t* output) {
  const char* fn = "fully_connected";
  check_fully_connected(p, s);
  check_multipliers(multipliers, s.out_features, fn);
  check_pointer(input, int64_t{s.batch} * s.in_features, fn, "input");
  check_pointer(filter, int64_t{s.out_features} * s.in_features, fn, "filter");
  check_pointer(output, int64_t{s.batch} * s.out_features, fn, "output");
  if (s.batch == 0) return;

  KernelContext local;
  KernelContext& c = ctx ? *ctx : local;
  KernelResources& res = resources(c);
  const IsaKernels& isa = isa_kernels(isa_id);
  if (s.batch <= kGemvMaxRows) {
    // A few rows: multiply straight from the unpacked weights (packing them would cost more
    // than the product).
    fully_connected_gemv(isa, c, p, multipliers, s, input, filter, bias, output);
    return;
  }
  const PackedSizes sizes = packed_sizes(isa, 1, s.out_features, s.in_features);
  uint8_t* packed = res.shared(1, sizes.bytes);
  auto* sums = reinterpret_cast<int32_t*>(res.shared(2, sizeof(int32_t) * s.out_features));
  pack_gemm_weights(isa, filter, 1, s.out_features, s.in_features, sizes, packed, sums);
  const GemmWeightsView view{&isa,           packed,        sizes.group_stride, 1,
                             s.out_features, s.in_features, sizes.depth_padded, sums};
  // A fully connected layer is a 1x1 conv over `batch` pixels.
  ConvParams cp;
  cp.input_zero_point = p.input_zero_point;
  cp.output_zero_point = p.output_zero_point;
  cp.act_min = p.act_min;
  cp.act_max = p.act_max;
  conv2d_gemm(&c, cp, multipliers, {1, 1, s.batch, s.in_features}, input,
              {s.out_features, 1, 1, s.in_features}, view, bias, {1, 1, s.batch, s.out_features},
              output);
}

}  // namespace edgeqat::runtime::fast::detail

// ---- prepacked weights (fast.h) ------------------------------------------------------------

namespace edgeqat::runtime::fast {

using runtime::detail::fail;

namespace {

void pack_into(const detail::IsaKernels& isa, const int8_t* filter, int groups, int n, int depth,
               PackedGemmWeights& out) {
  const detail::PackedSizes sizes = detail::packed_sizes(isa, groups, n, depth);
  out.isa = isa.name;
  out.groups = groups;
  out.n_per_group = n;
  out.depth = depth;
  out.depth_padded = sizes.depth_padded;
  out.group_stride = sizes.group_stride;
  out.data.assign(sizes.bytes, 0);
  out.weight_sums.assign(static_cast<size_t>(groups) * n, 0);
  detail::pack_gemm_weights(isa, filter, groups, n, depth, sizes, out.data.data(),
                            out.weight_sums.data());
}

detail::GemmWeightsView view_of(const PackedGemmWeights& w, const char* fn) {
  const detail::Isa isa = detail::isa_from_name(w.isa, fn);
  return {&detail::isa_kernels(isa),
          w.data.data(),
          w.group_stride,
          w.groups,
          w.n_per_group,
          w.depth,
          w.depth_padded,
          w.weight_sums.data()};
}

}  // namespace

PackedConv2d pack_conv2d(const ConvParams& params, const Shape4& fs, const int8_t* filter,
                         const std::string& isa) {
  const char* fn = "pack_conv2d";
  const detail::Isa id = detail::isa_from_name(isa, fn);
  if (fs.n < 1 || fs.h < 1 || fs.w < 1 || fs.c < 1) {
    fail(fn, "filter_shape must have all dimensions >= 1, got [", fs.n, ", ", fs.h, ", ", fs.w,
         ", ", fs.c, "]");
  }
  if (params.groups < 1) fail(fn, "groups must be >= 1, got ", params.groups);
  if (fs.n % params.groups != 0) {
    fail(fn, "groups (", params.groups, ") must divide filter_shape.n (output channels, ", fs.n,
         ")");
  }
  const int64_t depth = int64_t{fs.h} * fs.w * fs.c;
  if (depth > kMaxAccumulationDepth) {
    fail(fn, "kernel_h * kernel_w * in_channels_per_group must be <= 65536, got ", fs.h, " * ",
         fs.w, " * ", fs.c, " = ", depth);
  }
  check_pointer(filter, num_elements(fs), fn, "filter");
  PackedConv2d packed;
  packed.filter_shape = fs;
  packed.groups = params.groups;
  pack_into(detail::isa_kernels(id), filter, params.groups, fs.n / params.groups,
            static_cast<int>(depth), packed.gemm);
  return packed;
}

PackedFullyConnected pack_fully_connected(const FullyConnectedShape& s, const int8_t* filter,
                                          const std::string& isa) {
  const char* fn = "pack_fully_connected";
  const detail::Isa id = detail::isa_from_name(isa, fn);
  if (s.in_features < 1) fail(fn, "shape.in_features must be >= 1, got ", s.in_features);
  if (s.out_features < 1) fail(fn, "shape.out_features must be >= 1, got ", s.out_features);
  if (s.in_features > kMaxAccumulationDepth) {
    fail(fn, "shape.in_features must be <= 65536, got ", s.in_features);
  }
  check_pointer(filter, int64_t{s.out_features} * s.in_features, fn, "filter");
  PackedFullyConnected packed;
  packed.in_features = s.in_features;
  packed.out_features = s.out_features;
  pack_into(detail::isa_kernels(id), filter, 1, s.out_features, s.in_features, packed.gemm);
  return packed;
}

void conv2d_packed(KernelContext* ctx, const ConvParams& p, const QuantizedMultiplier* multipliers,
                   const PackedConv2d& packed, const Shape4& in, const int8_t* input,
                   const int32_t* bias, const Shape4& out, int8_t* output) {
  if (packed.gemm.data.empty()) {
    fail("conv2d_packed", "the packed weights are empty (not made by pack_conv2d)");
  }
  check_conv2d(p, in, packed.filter_shape, out);
  check_multipliers(multipliers, out.c, "conv2d");
  check_pointer(input, num_elements(in), "conv2d", "input");
  check_pointer(output, num_elements(out), "conv2d", "output");
  if (p.groups != packed.groups) {
    fail("conv2d_packed", "params.groups (", p.groups, ") differs from the packed weights' (",
         packed.groups, ")");
  }
  detail::conv2d_gemm(ctx, p, multipliers, in, input, packed.filter_shape,
                      view_of(packed.gemm, "conv2d_packed"), bias, out, output);
}

void fully_connected_packed(KernelContext* ctx, const FullyConnectedParams& p,
                            const QuantizedMultiplier* multipliers,
                            const PackedFullyConnected& packed, const FullyConnectedShape& s,
                            const int8_t* input, const int32_t* bias, int8_t* output) {
  const char* fn = "fully_connected";
  if (packed.gemm.data.empty()) {
    fail("fully_connected_packed",
         "the packed weights are empty (not made by pack_fully_connected)");
  }
  check_fully_connected(p, s);
  check_multipliers(multipliers, s.out_features, fn);
  check_pointer(input, int64_t{s.batch} * s.in_features, fn, "input");
  check_pointer(output, int64_t{s.batch} * s.out_features, fn, "output");
  if (s.in_features != packed.in_features || s.out_features != packed.out_features) {
    fail("fully_connected_packed", "shape (in_features ", s.in_features, ", out_features ",
         s.out_features, ") differs from the packed weights' (", packed.in_features, ", ",
         packed.out_features, ")");
  }
  if (s.batch == 0) return;
  ConvParams cp;
  cp.input_zero_point = p.input_zero_point;
  cp.output_zero_point = p.output_zero_point;
  cp.act_min = p.act_min;
  cp.act_max = p.act_max;
  detail::conv2d_gemm(ctx, cp, multipliers, {1, 1, s.batch, s.in_features}, input,
                      {s.out_features, 1, 1, s.in_features},
                      view_of(packed.gemm, "fully_connected_packed"), bias,
                      {1, 1, s.batch, s.out_features}, output);
}

}  // namespace edgeqat::runtime::fast
