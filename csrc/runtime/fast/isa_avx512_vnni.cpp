// AVX-512 VNNI inner kernels (compiled with -mavx512f -mavx512bw -mavx512vl -mavx512vnni; only
// called after __builtin_cpu_supports said yes, see isa.h for why nothing here may have vague
// linkage: no inline or template function outside the anonymous namespace, no std::).
//
// GEMM: vpdpbusd multiplies unsigned bytes by signed bytes and adds groups of four products to
// int32 lanes without saturation (unlike vpdpbusds or vpmaddubsw's int16 pairs). A holds
// u8 = q + 128, B the int8 weights; the driver's per-channel offset -(128 + zp) * sum_k w turns
// the sum into sum (q - zp) * w. Each accumulator lane is exact modulo 2^32 and the true result
// fits in int32 (kMaxAccumulationDepth), so the lane holds the exact value.
// GCC 12's AVX-512 intrinsics initialize their "undefined" pass-through operands from
// themselves (GCC bug 105593), which -Wuninitialized reports at every inlined call in this file.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <cstddef>
#include <cstdint>

#include "isa.h"

namespace edgeqat::runtime::fast::detail {
namespace {

constexpr int kPanel = 64;  // channels per B panel: four zmm of 16 int32 lanes

// The output stage of 16 consecutive channels, split into even / odd lanes for the 64-bit
// products (vpmuldq multiplies the low int32 of each int64 lane).
struct Stage16 {
  __m512i offset, bias, mult_even, mult_odd, shift_even, shift_odd, round_even, round_odd;
};

struct Clamp {
  __m512i lo, hi;  // int64: act_min - zp, act_max - zp
  __m512i zp;      // int32
};

Stage16 load_stage(const OutputStage& s, int n) {
  Stage16 r;
  r.offset = _mm512_loadu_si512(s.offset + n);
  r.bias = _mm512_loadu_si512(s.bias + n);
  const __m512i mult = _mm512_loadu_si512(s.multiplier + n);
  const __m512i shift = _mm512_loadu_si512(s.right_shift + n);
  const __m512i one = _mm512_set1_epi64(1);
  r.mult_even = mult;
  r.mult_odd = _mm512_srli_epi64(mult, 32);
  r.shift_even = _mm512_and_si512(shift, _mm512_set1_epi64(0xFFFFFFFFll));
  r.shift_odd = _mm512_srli_epi64(shift, 32);
  r.round_even = _mm512_sllv_epi64(one, _mm512_sub_epi64(r.shift_even, one));
  r.round_odd = _mm512_sllv_epi64(one, _mm512_sub_epi64(r.shift_odd, one));
  return r;
}

Clamp make_clamp(const OutputStage& s) {
  return {_mm512_set1_epi64(s.out_min), _mm512_set1_epi64(s.out_max),
          _mm512_set1_epi32(s.zero_point)};
}

// requantize_output of 16 raw accumulators (see OutputStage in isa.h), as int32 lanes.
__m512i requant(__m512i acc, const Stage16& s, const Clamp& c) {
  const __m512i x = _mm512_add_epi32(acc, s.offset);  // mod 2^32: exact, see above
  // saturate_int32(int64(x) + bias): the int32 sum overflowed iff x and bias have the same sign
  // and the sum the other one; it then saturates toward x's sign.
  const __m512i sum = _mm512_add_epi32(x, s.bias);
  const __m512i ovf_sign =
      _mm512_and_si512(_mm512_xor_si512(x, sum), _mm512_xor_si512(s.bias, sum));
  const __mmask16 ovf = _mm512_cmplt_epi32_mask(ovf_sign, _mm512_setzero_si512());
  const __m512i sat = _mm512_xor_si512(_mm512_srai_epi32(x, 31), _mm512_set1_epi32(0x7FFFFFFF));
  const __m512i t = _mm512_mask_blend_epi32(ovf, sum, sat);
  // (t * multiplier + 2^(s - 1)) >> s in 64 bits: |t * multiplier| < 2^62, s in [1, 62].
  __m512i even = _mm512_mul_epi32(t, s.mult_even);
  __m512i odd = _mm512_mul_epi32(_mm512_srli_epi64(t, 32), s.mult_odd);
  even = _mm512_srav_epi64(_mm512_add_epi64(even, s.round_even), s.shift_even);
  odd = _mm512_srav_epi64(_mm512_add_epi64(odd, s.round_odd), s.shift_odd);
  even = _mm512_min_epi64(_mm512_max_epi64(even, c.lo), c.hi);
  odd = _mm512_min_epi64(_mm512_max_epi64(odd, c.lo), c.hi);
  const __m512i r = _mm512_mask_blend_epi32(0xAAAA, even, _mm512_slli_epi64(odd, 32));
  return _mm512_add_epi32(r, c.zp);
}

__mmask16 lanes(int valid) {  // the first min(valid, 16) lanes
  return valid >= 16 ? static_cast<__mmask16>(0xFFFF)
                     : static_cast<__mmask16>((1u << (valid > 0 ? valid : 0)) - 1u);
}

// One MR x (NV * 16) tile over the whole depth, then its output stage.
template <int MR, int NV>
void tile(const uint8_t* a, size_t lda, const int8_t* b, int kg, int8_t* c, size_t ldc, int valid,
          const OutputStage& st, int n0, const Clamp& cl) {
  __m512i acc[MR][NV];
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_setzero_si512();
  for (int k = 0; k < kg; ++k) {
    __m512i bv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      bv[v] = _mm512_load_si512(b + (static_cast<size_t>(k) * NV + v) * 64);
    }
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      int32_t a4;
      __builtin_memcpy(&a4, a + r * lda + 4 * static_cast<size_t>(k), 4);
      const __m512i av = _mm512_set1_epi32(a4);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_dpbusd_epi32(acc[r][v], av, bv[v]);
    }
  }
#pragma GCC unroll 4
  for (int v = 0; v < NV; ++v) {
    if (valid <= v * 16) break;
    const Stage16 s = load_stage(st, n0 + v * 16);
    const __mmask16 mask = lanes(valid - v * 16);
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      _mm512_mask_cvtepi32_storeu_epi8(c + r * ldc + v * 16, mask, requant(acc[r][v], s, cl));
    }
  }
}

// Rows per tile for NV vectors of channels: MR * NV accumulators + NV weight vectors <= 32 zmm.
template <int NV>
constexpr int rows_for() {
  return NV == 4 ? 6 : (NV == 3 ? 8 : (NV == 2 ? 12 : 16));
}

template <int NV, int MR>
void tail_rows(int m, const uint8_t* a, size_t lda, const int8_t* b, int kg, int8_t* c, size_t ldc,
               int valid, const OutputStage& st, int n0, const Clamp& cl) {
  if constexpr (MR > 0) {
    if (m == MR) {
      tile<MR, NV>(a, lda, b, kg, c, ldc, valid, st, n0, cl);
    } else {
      tail_rows<NV, MR - 1>(m, a, lda, b, kg, c, ldc, valid, st, n0, cl);
    }
  }
}

template <int NV>
void panel(const GemmArgs& g, const int8_t* b, int n0, int valid, const Clamp& cl) {
  constexpr int kMr = rows_for<NV>();
  const int kg = g.kp / 4;
  int m0 = 0;
  for (; m0 + kMr <= g.m; m0 += kMr) {
    tile<kMr, NV>(g.a + m0 * g.lda, g.lda, b, kg, g.c + m0 * g.ldc + n0, g.ldc, valid, *g.stage, n0,
                  cl);
  }
  if (m0 < g.m) {
    tail_rows<NV, kMr - 1>(g.m - m0, g.a + m0 * g.lda, g.lda, b, kg, g.c + m0 * g.ldc + n0, g.ldc,
                           valid, *g.stage, n0, cl);
  }
}

void gemm(const GemmArgs& g) {
  const Clamp cl = make_clamp(*g.stage);
  const int n_padded = (g.n_total + 15) / 16 * 16;
  for (int n0 = g.n_begin; n0 < g.n_end; n0 += kPanel) {
    const int width = n_padded - n0 < kPanel ? n_padded - n0 : kPanel;
    const int valid = g.n_end - n0 < width ? g.n_end - n0 : width;
    const int8_t* b = static_cast<const int8_t*>(g.b) + static_cast<size_t>(n0) * g.kp;
    switch (width / 16) {
      case 4:
        panel<4>(g, b, n0, valid, cl);
        break;
      case 3:
        panel<3>(g, b, n0, valid, cl);
        break;
      case 2:
        panel<2>(g, b, n0, valid, cl);
        break;
      default:
        panel<1>(g, b, n0, valid, cl);
        break;
    }
  }
}

// First and one-past-last tap index k in [0, kernel) with 0 <= start + k * dilation < size.
void tap_range(int64_t start, int kernel, int dilation, int size, int* begin, int* end) {
  int64_t lo = 0;
  if (start < 0) lo = (-start + dilation - 1) / dilation;
  int64_t hi = kernel;
  const int64_t last = size - 1 - start;  // need k * dilation <= last
  if (last < 0) {
    hi = 0;
  } else if (last / dilation + 1 < hi) {
    hi = last / dilation + 1;
  }
  *begin = static_cast<int>(lo);
  *end = static_cast<int>(hi < lo ? lo : hi);
}

void depthwise_row(const DepthwiseRowArgs& d) {
  const int channels = d.channels;
  const Clamp cl = make_clamp(*d.stage);
  const __m512i zp16 = _mm512_set1_epi16(static_cast<int16_t>(d.input_zero_point));
  int ky0, ky1;
  tap_range(int64_t{d.oy} * d.stride_h - d.pad_top, d.kh, d.dilation_h, d.in_h, &ky0, &ky1);
  const int64_t y0 = int64_t{d.oy} * d.stride_h - d.pad_top;
  for (int ox = 0; ox < d.out_w; ++ox) {
    const int64_t x0 = int64_t{ox} * d.stride_w - d.pad_left;
    int kx0, kx1;
    tap_range(x0, d.kw, d.dilation_w, d.in_w, &kx0, &kx1);
    int8_t* out = d.output + static_cast<size_t>(ox) * channels;
    for (int c0 = 0; c0 < channels; c0 += 32) {
      const int valid = channels - c0 < 32 ? channels - c0 : 32;
      const __mmask32 mask = valid == 32 ? static_cast<__mmask32>(0xFFFFFFFFu)
                                         : static_cast<__mmask32>((1u << valid) - 1u);
      __m512i acc0 = _mm512_setzero_si512(), acc1 = _mm512_setzero_si512();
      for (int ky = ky0; ky < ky1; ++ky) {
        const int64_t iy = y0 + int64_t{ky} * d.dilation_h;
        const int8_t* line = d.input + iy * d.in_w * channels + c0;
        const int16_t* wrow = d.weights + static_cast<size_t>(ky) * d.kw * d.cp + c0;
        for (int kx = kx0; kx < kx1; ++kx) {
          const int64_t ix = x0 + int64_t{kx} * d.dilation_w;
          const __m256i x8 = _mm256_maskz_loadu_epi8(mask, line + ix * channels);
          const __m512i x16 = _mm512_sub_epi16(_mm512_cvtepi8_epi16(x8), zp16);
          const __m512i w16 = _mm512_load_si512(wrow + static_cast<size_t>(kx) * d.cp);
          // |w * (q - zp)| <= 128 * 255 = 32640: exact in int16.
          const __m512i p = _mm512_mullo_epi16(x16, w16);
          acc0 = _mm512_add_epi32(acc0, _mm512_cvtepi16_epi32(_mm512_castsi512_si256(p)));
          acc1 = _mm512_add_epi32(acc1, _mm512_cvtepi16_epi32(_mm512_extracti64x4_epi64(p, 1)));
        }
      }
      const Stage16 s0 = load_stage(*d.stage, c0);
      _mm512_mask_cvtepi32_storeu_epi8(out + c0, lanes(valid), requant(acc0, s0, cl));
      if (valid > 16) {
        const Stage16 s1 = load_stage(*d.stage, c0 + 16);
        _mm512_mask_cvtepi32_storeu_epi8(out + c0 + 16, lanes(valid - 16), requant(acc1, s1, cl));
      }
    }
  }
}

}  // namespace

extern const IsaKernels kAvx512VnniKernels = {
    Isa::kAvx512Vnni, "avx512_vnni", 1, 4, kPanel, 16, 48, &gemm, &depthwise_row};

}  // namespace edgeqat::runtime::fast::detail
