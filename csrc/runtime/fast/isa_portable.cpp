// Portable inner kernels (standard C++, the compiler's baseline flags): the int16 GEMM layout of
// isa.h (a_elem 2, kgroup 1, panels of 16 channels) and the depthwise row, written as plain
// loops over fixed-size arrays that the compiler vectorizes.
#include <cstdint>
#include <cstring>

#include "edgeqat/runtime/requantize.h"
#include "isa.h"

namespace edgeqat::runtime::fast::detail {
namespace {

constexpr int kPanel = 16;  // channels per B panel
constexpr int kMr = 4;      // rows per micro tile

// The output stage of isa.h for channel n, with the inline requantization of requantize.h.
inline int8_t output_value(int32_t acc, const OutputStage& s, int n) {
  // acc + offset wraps mod 2^32 by design (the offset is 0 for the int16 layout anyway).
  const auto x =
      static_cast<int32_t>(static_cast<uint32_t>(acc) + static_cast<uint32_t>(s.offset[n]));
  const int32_t total = saturate_to_int32(int64_t{x} + s.bias[n]);
  const QuantizedMultiplier m{s.multiplier[n], 31 - s.right_shift[n]};
  return requantize_output(total, m, s.zero_point, s.out_min + s.zero_point,
                           s.out_max + s.zero_point);
}

// MR x W accumulators over the packed depth: acc[r][n] = sum_k A[r][k] * B[k][n], B laid out
// [kp][W] (kgroup 1) so that the inner loop is a contiguous int16 x int16 -> int32 multiply-add
// over the W channels, which compilers vectorize on any SIMD ISA.
// |A| <= 255, |B| <= 128: every product is exact in int32, and so is the total (the depth limit
// of types.h). MR is a compile-time constant with the row loop unrolled. (With a run-time row
// count GCC 12 -O3 vectorized the row loop and read rows past the last one.)
template <int W, int MR>
void tile(const int16_t* a, size_t lda, const int16_t* b, int kp, int32_t (*acc)[kPanel]) {
  int32_t sum[MR][W] = {};
  for (int k = 0; k < kp; ++k) {
    const int16_t* bk = b + static_cast<size_t>(k) * W;
#pragma GCC unroll 4
    for (int r = 0; r < MR; ++r) {
      const int32_t ak = a[r * lda + k];
      for (int n = 0; n < W; ++n) sum[r][n] += ak * bk[n];
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int n = 0; n < W; ++n) acc[r][n] = sum[r][n];
}

template <int W>
void tile_rows(int rows, const int16_t* a, size_t lda, const int16_t* b, int kp,
               int32_t (*acc)[kPanel]) {
  switch (rows) {
    case 4:
      return tile<W, 4>(a, lda, b, kp, acc);
    case 3:
      return tile<W, 3>(a, lda, b, kp, acc);
    case 2:
      return tile<W, 2>(a, lda, b, kp, acc);
    default:
      return tile<W, 1>(a, lda, b, kp, acc);
  }
}

void gemm(const GemmArgs& g) {
  const auto* a = reinterpret_cast<const int16_t*>(g.a);
  const size_t lda = g.lda / sizeof(int16_t);
  const auto* b = static_cast<const int16_t*>(g.b);
  const int n_padded = (g.n_total + 7) / 8 * 8;
  for (int n0 = g.n_begin; n0 < g.n_end; n0 += kPanel) {
    const int width = n_padded - n0 < kPanel ? n_padded - n0 : kPanel;
    const int valid = g.n_end - n0 < width ? g.n_end - n0 : width;
    const int16_t* panel = b + static_cast<size_t>(n0) * g.kp;
    for (int m0 = 0; m0 < g.m; m0 += kMr) {
      const int rows = g.m - m0 < kMr ? g.m - m0 : kMr;
      int32_t acc[kMr][kPanel];
      if (width == kPanel) {
        tile_rows<kPanel>(rows, a + m0 * lda, lda, panel, g.kp, acc);
      } else {  // width 8
        tile_rows<8>(rows, a + m0 * lda, lda, panel, g.kp, acc);
      }
      for (int r = 0; r < rows; ++r) {
        int8_t* c = g.c + (m0 + r) * g.ldc + n0;
        for (int n = 0; n < valid; ++n) c[n] = output_value(acc[r][n], *g.stage, n0 + n);
      }
    }
  }
}

void depthwise_row(const DepthwiseRowArgs& d) {
  const int channels = d.channels;
  auto* acc = static_cast<int32_t*>(d.scratch);
  const int64_t y0 = int64_t{d.oy} * d.stride_h - d.pad_top;
  for (int ox = 0; ox < d.out_w; ++ox) {
    const int64_t x0 = int64_t{ox} * d.stride_w - d.pad_left;
    const int c0 = d.c_begin, c1 = d.c_end;
    for (int c = c0; c < c1; ++c) acc[c] = 0;
    for (int ky = 0; ky < d.kh; ++ky) {
      const int64_t iy = y0 + int64_t{ky} * d.dilation_h;
      if (iy < 0 || iy >= d.in_h) continue;  // padding: contributes nothing
      for (int kx = 0; kx < d.kw; ++kx) {
        const int64_t ix = x0 + int64_t{kx} * d.dilation_w;
        if (ix < 0 || ix >= d.in_w) continue;
        const int8_t* x = d.input + (iy * d.in_w + ix) * channels;
        const int16_t* w =
            static_cast<const int16_t*>(d.weights) + static_cast<size_t>(ky * d.kw + kx) * d.cp;
        const int32_t zp = d.input_zero_point;
        // |w * (q - zp)| <= 128 * 255 = 32640: exact as an int16 product, which vectorizes
        // as a 16-bit multiply on every SIMD ISA.
        for (int c = c0; c < c1; ++c) {
          acc[c] += static_cast<int16_t>(w[c] * static_cast<int16_t>(x[c] - zp));
        }
      }
    }
    int8_t* out = d.output + static_cast<size_t>(ox) * channels;
    for (int c = c0; c < c1; ++c) out[c] = output_value(acc[c], *d.stage, c);
  }
}

// gemv (isa.h): int16 A (q - zp) against the unpacked int8 weight rows, exact int32 sums.
void gemv(const GemvArgs& g) {
  for (int r = 0; r < g.m; ++r) {
    const auto* a = reinterpret_cast<const int16_t*>(g.a + r * g.lda);
    for (int n = g.n_begin; n < g.n_end; ++n) {
      const int8_t* w = g.w + static_cast<size_t>(n) * g.depth;
      int32_t acc = 0;
      for (int k = 0; k < g.depth; ++k) acc += a[k] * w[k];
      g.c[r * g.ldc + n] = output_value(acc, *g.stage, n);
    }
  }
}

constexpr IsaKernels make_kernels() {
  IsaKernels k{};
  k.isa = Isa::kPortable;
  k.name = "portable";
  k.a_elem = 2;
  k.kgroup = 1;
  k.panel = kPanel;
  k.n_unit = 8;
  k.mr = kMr;
  k.gemm = &gemm;
  k.gemv = &gemv;
  k.dw_layout = kDepthwiseInt16;
  k.depthwise_row = &depthwise_row;
  return k;  // add, prepare_stage: null (table-based add, stage arrays read directly)
}

}  // namespace

extern const IsaKernels kPortableKernels = make_kernels();

}  // namespace edgeqat::runtime::fast::detail
