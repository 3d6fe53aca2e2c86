// AVX2 inner kernels (compiled with -mavx2; only called after __builtin_cpu_supports("avx2"),
// see isa.h for why nothing here may have vague linkage).
//
// GEMM on int16: A holds q - zp (|.| <= 255), B the weights widened to int16; vpmaddwd
// multiplies int16 pairs and adds each pair into an int32 lane exactly (its one overflow case,
// -32768 * -32768 twice, cannot occur here), and the int32 sums are exact (types.h). Not
// vpmaddubsw: its int16 pair sums of u8 * s8 products can saturate (2 * 255 * 128 > 32767).
#include <immintrin.h>

#include <cstddef>
#include <cstdint>

#include "isa.h"

namespace edgeqat::runtime::fast::detail {
namespace {

constexpr int kPanel = 16;  // channels per B panel: two ymm of 8 int32 lanes
constexpr int kMr = 4;      // rows per tile: 8 accumulators + 2 weight vectors of 16 ymm

// The output stage of 8 consecutive channels, precomputed once per call (prepare_stage), split
// into even / odd lanes for the 64-bit products. 256 bytes = 8 * kPreparedBytesPerChannel.
struct Stage8 {
  __m256i offset;  // offset, plus the bias when the bias cannot saturate (isa.h)
  __m256i bias;
  __m256i mult_even, mult_odd, shift_even, shift_odd, round_even, round_odd;
};
static_assert(sizeof(Stage8) == 8 * kPreparedBytesPerChannel, "prepared stage layout");

struct Clamp {
  __m256i lo, hi;      // int64
  __m256i lo32, hi32;  // int32
  __m256i zp;          // int32
  bool saturate;       // OutputStage::bias_saturates
  bool narrow;         // OutputStage::narrow
};

void prepare_stage(const OutputStage& s, int channels, void* dst) {
  auto* out = static_cast<Stage8*>(dst);
  const __m256i one = _mm256_set1_epi64x(1);
  for (int n = 0; n < channels; n += 8) {
    Stage8 r;
    const __m256i offset = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(s.offset + n));
    r.bias = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(s.bias + n));
    r.offset = s.bias_saturates ? offset : _mm256_add_epi32(offset, r.bias);
    const __m256i mult = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(s.multiplier + n));
    const __m256i shift = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(s.right_shift + n));
    r.mult_even = mult;
    r.mult_odd = _mm256_srli_epi64(mult, 32);
    r.shift_even = _mm256_and_si256(shift, _mm256_set1_epi64x(0xFFFFFFFFll));
    r.shift_odd = _mm256_srli_epi64(shift, 32);
    r.round_even = _mm256_sllv_epi64(one, _mm256_sub_epi64(r.shift_even, one));
    r.round_odd = _mm256_sllv_epi64(one, _mm256_sub_epi64(r.shift_odd, one));
    out[n / 8] = r;
  }
}

const Stage8& stage_at(const OutputStage& s, int n) {  // n a multiple of 8
  return static_cast<const Stage8*>(s.prepared)[n / 8];
}

Clamp make_clamp(const OutputStage& s) {
  return {_mm256_set1_epi64x(s.out_min),
          _mm256_set1_epi64x(s.out_max),
          _mm256_set1_epi32(s.out_min),
          _mm256_set1_epi32(s.out_max),
          _mm256_set1_epi32(s.zero_point),
          s.bias_saturates != 0,
          s.narrow != 0};
}

// Arithmetic right shift of int64 lanes by per-lane counts (AVX2 only has the logical one):
// for v < 0, ~v >= 0 and ~(~v >> s) = floor(v / 2^s).
__m256i sra64(__m256i v, __m256i count) {
  const __m256i sign = _mm256_cmpgt_epi64(_mm256_setzero_si256(), v);
  return _mm256_xor_si256(_mm256_srlv_epi64(_mm256_xor_si256(v, sign), count), sign);
}

__m256i clamp64(__m256i v, __m256i lo, __m256i hi) {
  v = _mm256_blendv_epi8(v, lo, _mm256_cmpgt_epi64(lo, v));
  return _mm256_blendv_epi8(v, hi, _mm256_cmpgt_epi64(v, hi));
}

// requantize_output of 8 raw accumulators (OutputStage in isa.h), as int32 lanes.
__m256i requant(__m256i acc, const Stage8& s, const Clamp& c) {
  const __m256i x = _mm256_add_epi32(acc, s.offset);
  __m256i t = x;
  if (c.saturate) {  // saturate_int32(int64(x) + bias), see isa_avx512_vnni.cpp
    const __m256i sum = _mm256_add_epi32(x, s.bias);
    const __m256i ovf = _mm256_srai_epi32(
        _mm256_and_si256(_mm256_xor_si256(x, sum), _mm256_xor_si256(s.bias, sum)), 31);
    const __m256i sat = _mm256_xor_si256(_mm256_srai_epi32(x, 31), _mm256_set1_epi32(0x7FFFFFFF));
    t = _mm256_blendv_epi8(sum, sat, ovf);
  }
  __m256i even = _mm256_mul_epi32(t, s.mult_even);
  __m256i odd = _mm256_mul_epi32(_mm256_srli_epi64(t, 32), s.mult_odd);
  even = sra64(_mm256_add_epi64(even, s.round_even), s.shift_even);
  odd = sra64(_mm256_add_epi64(odd, s.round_odd), s.shift_odd);
  __m256i r;
  if (c.narrow) {  // the results fit in int32 lanes: clamp there
    r = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
    r = _mm256_min_epi32(_mm256_max_epi32(r, c.lo32), c.hi32);
  } else {
    even = clamp64(even, c.lo, c.hi);
    odd = clamp64(odd, c.lo, c.hi);
    r = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
  }
  return _mm256_add_epi32(r, c.zp);
}

// Stores the low byte of the first `valid` (<= 8) int32 lanes (values already in int8 range).
void store8(int8_t* dst, __m256i v, int valid) {
  const __m256i pick =
      _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 0, 4, 8, 12, -1,
                       -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1);
  const __m256i bytes = _mm256_shuffle_epi8(v, pick);
  const __m128i packed =
      _mm_unpacklo_epi32(_mm256_castsi256_si128(bytes), _mm256_extracti128_si256(bytes, 1));
  if (valid >= 8) {
    _mm_storel_epi64(reinterpret_cast<__m128i*>(dst), packed);
  } else if (valid > 0) {
    alignas(16) int8_t tmp[16];
    _mm_store_si128(reinterpret_cast<__m128i*>(tmp), packed);
    for (int i = 0; i < valid; ++i) dst[i] = tmp[i];
  }
}

template <int MR, int NV>
void tile(const uint8_t* a, size_t lda, const int16_t* b, int kg, int8_t* c, size_t ldc, int valid,
          const OutputStage& st, int n0, const Clamp& cl) {
  __m256i acc[MR][NV];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm256_setzero_si256();
  for (int k = 0; k < kg; ++k) {
    __m256i bv[NV];
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) {
      bv[v] = _mm256_loadu_si256(
          reinterpret_cast<const __m256i*>(b + (static_cast<size_t>(k) * NV + v) * 16));
    }
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      int32_t a2;  // two int16 of A: depth 2k, 2k + 1
      __builtin_memcpy(&a2, a + r * lda + 4 * static_cast<size_t>(k), 4);
      const __m256i av = _mm256_set1_epi32(a2);
#pragma GCC unroll 2
      for (int v = 0; v < NV; ++v) {
        acc[r][v] = _mm256_add_epi32(acc[r][v], _mm256_madd_epi16(av, bv[v]));
      }
    }
  }
#pragma GCC unroll 2
  for (int v = 0; v < NV; ++v) {
    if (valid <= v * 8) break;
    const Stage8& s = stage_at(st, n0 + v * 8);
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      store8(c + r * ldc + v * 8, requant(acc[r][v], s, cl), valid - v * 8);
    }
  }
}

template <int NV, int MR>
void tail_rows(int m, const uint8_t* a, size_t lda, const int16_t* b, int kg, int8_t* c, size_t ldc,
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
void panel(const GemmArgs& g, const int16_t* b, int n0, int valid, const Clamp& cl) {
  constexpr int kRows = NV == 2 ? kMr : 2 * kMr;
  const int kg = g.kp / 2;
  int m0 = 0;
  for (; m0 + kRows <= g.m; m0 += kRows) {
    tile<kRows, NV>(g.a + m0 * g.lda, g.lda, b, kg, g.c + m0 * g.ldc + n0, g.ldc, valid, *g.stage,
                    n0, cl);
  }
  if (m0 < g.m) {
    tail_rows<NV, kRows - 1>(g.m - m0, g.a + m0 * g.lda, g.lda, b, kg, g.c + m0 * g.ldc + n0, g.ldc,
                             valid, *g.stage, n0, cl);
  }
}

void gemm(const GemmArgs& g) {
  const Clamp cl = make_clamp(*g.stage);
  const int n_padded = (g.n_total + 7) / 8 * 8;
  for (int n0 = g.n_begin; n0 < g.n_end; n0 += kPanel) {
    const int width = n_padded - n0 < kPanel ? n_padded - n0 : kPanel;
    const int valid = g.n_end - n0 < width ? g.n_end - n0 : width;
    const int16_t* b = static_cast<const int16_t*>(g.b) + static_cast<size_t>(n0) * g.kp;
    if (width == kPanel) {
      panel<2>(g, b, n0, valid, cl);
    } else {
      panel<1>(g, b, n0, valid, cl);
    }
  }
}

void tap_range(int64_t start, int kernel, int dilation, int size, int* begin, int* end) {
  int64_t lo = 0;
  if (start < 0) lo = (-start + dilation - 1) / dilation;
  int64_t hi = kernel;
  const int64_t last = size - 1 - start;
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
  const __m256i zp16 = _mm256_set1_epi16(static_cast<int16_t>(d.input_zero_point));
  const int64_t y0 = int64_t{d.oy} * d.stride_h - d.pad_top;
  int ky0, ky1;
  tap_range(y0, d.kh, d.dilation_h, d.in_h, &ky0, &ky1);
  for (int ox = 0; ox < d.out_w; ++ox) {
    const int64_t x0 = int64_t{ox} * d.stride_w - d.pad_left;
    int kx0, kx1;
    tap_range(x0, d.kw, d.dilation_w, d.in_w, &kx0, &kx1);
    int8_t* out = d.output + static_cast<size_t>(ox) * channels;
    for (int c0 = d.c_begin; c0 < d.c_end; c0 += 16) {
      const int valid = d.c_end - c0 < 16 ? d.c_end - c0 : 16;
      __m256i acc0 = _mm256_setzero_si256(), acc1 = _mm256_setzero_si256();
      for (int ky = ky0; ky < ky1; ++ky) {
        const int64_t iy = y0 + int64_t{ky} * d.dilation_h;
        const int8_t* line = d.input + iy * d.in_w * channels + c0;
        const int16_t* wrow =
            static_cast<const int16_t*>(d.weights) + static_cast<size_t>(ky) * d.kw * d.cp + c0;
        for (int kx = kx0; kx < kx1; ++kx) {
          const int8_t* px = line + (x0 + int64_t{kx} * d.dilation_w) * channels;
          __m128i x8;
          if (valid == 16) {
            x8 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(px));
          } else {  // the last channels of a pixel: do not read past the tensor
            alignas(16) int8_t tmp[16] = {};
            for (int i = 0; i < valid; ++i) tmp[i] = px[i];
            x8 = _mm_load_si128(reinterpret_cast<const __m128i*>(tmp));
          }
          const __m256i x16 = _mm256_sub_epi16(_mm256_cvtepi8_epi16(x8), zp16);
          const __m256i w16 = _mm256_load_si256(
              reinterpret_cast<const __m256i*>(wrow + static_cast<size_t>(kx) * d.cp));
          // |w * (q - zp)| <= 32640: exact in int16.
          const __m256i p = _mm256_mullo_epi16(x16, w16);
          acc0 = _mm256_add_epi32(acc0, _mm256_cvtepi16_epi32(_mm256_castsi256_si128(p)));
          acc1 = _mm256_add_epi32(acc1, _mm256_cvtepi16_epi32(_mm256_extracti128_si256(p, 1)));
        }
      }
      store8(out + c0, requant(acc0, stage_at(*d.stage, c0), cl), valid);
      if (valid > 8) store8(out + c0 + 8, requant(acc1, stage_at(*d.stage, c0 + 8), cl), valid - 8);
    }
  }
}

// Arithmetic right shift of int64 lanes by a uniform count (see sra64).
__m256i sra64_uniform(__m256i v, __m128i count) {
  const __m256i sign = _mm256_cmpgt_epi64(_mm256_setzero_si256(), v);
  return _mm256_xor_si256(_mm256_srl_epi64(_mm256_xor_si256(v, sign), count), sign);
}

// Uniform-multiplier requantization of 8 int32 lanes, exact in 64 bits (see isa_avx512_vnni.cpp).
template <bool kClamp>
__m256i requant_uniform(__m256i x, __m256i m, __m256i round, __m128i shift, __m256i lo,
                        __m256i hi) {
  __m256i even = _mm256_mul_epi32(x, m);
  __m256i odd = _mm256_mul_epi32(_mm256_srli_epi64(x, 32), m);
  even = sra64_uniform(_mm256_add_epi64(even, round), shift);
  odd = sra64_uniform(_mm256_add_epi64(odd, round), shift);
  if (kClamp) {
    even = clamp64(even, lo, hi);
    odd = clamp64(odd, lo, hi);
  }
  return _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
}

// Add (AddParams' arithmetic, see reference add): 8 values per step.
void add(const AddArgs& a) {
  const __m256i zp1 = _mm256_set1_epi32(a.zp1), zp2 = _mm256_set1_epi32(a.zp2);
  const __m128i ls = _mm_cvtsi32_si128(a.left_shift);
  const __m256i m1 = _mm256_set1_epi32(a.m1), m2 = _mm256_set1_epi32(a.m2);
  const __m256i mo = _mm256_set1_epi32(a.mo);
  const __m256i r1 = _mm256_set1_epi64x(int64_t{1} << (a.rs1 - 1));
  const __m256i r2 = _mm256_set1_epi64x(int64_t{1} << (a.rs2 - 1));
  const __m256i ro = _mm256_set1_epi64x(int64_t{1} << (a.rso - 1));
  const __m128i s1 = _mm_cvtsi32_si128(a.rs1), s2 = _mm_cvtsi32_si128(a.rs2);
  const __m128i so = _mm_cvtsi32_si128(a.rso);
  const __m256i lo = _mm256_set1_epi64x(a.out_min), hi = _mm256_set1_epi64x(a.out_max);
  const __m256i zp = _mm256_set1_epi32(a.zero_point);
  for (size_t i = 0; i < a.count; i += 8) {
    const size_t left = a.count - i;
    __m128i b1, b2;
    if (left >= 8) {
      b1 = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(a.a + i));
      b2 = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(a.b + i));
    } else {  // the last values: do not read past the inputs
      alignas(16) int8_t t1[16] = {}, t2[16] = {};
      for (size_t k = 0; k < left; ++k) {
        t1[k] = a.a[i + k];
        t2[k] = a.b[i + k];
      }
      b1 = _mm_load_si128(reinterpret_cast<const __m128i*>(t1));
      b2 = _mm_load_si128(reinterpret_cast<const __m128i*>(t2));
    }
    // (q - zp) << left_shift: |.| <= 255 * 2^20 < 2^28.
    const __m256i x1 = _mm256_sll_epi32(_mm256_sub_epi32(_mm256_cvtepi8_epi32(b1), zp1), ls);
    const __m256i x2 = _mm256_sll_epi32(_mm256_sub_epi32(_mm256_cvtepi8_epi32(b2), zp2), ls);
    // Scaled by multipliers below 1 (check_add): below 2^28, no saturation; their sum fits.
    const __m256i sum = _mm256_add_epi32(requant_uniform<false>(x1, m1, r1, s1, lo, hi),
                                         requant_uniform<false>(x2, m2, r2, s2, lo, hi));
    const __m256i r = _mm256_add_epi32(requant_uniform<true>(sum, mo, ro, so, lo, hi), zp);
    store8(a.out + i, r, left >= 8 ? 8 : static_cast<int>(left));
  }
}

// Horizontal sum of 8 int32 lanes.
int32_t reduce8(__m256i v) {
  __m128i x = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  x = _mm_add_epi32(x, _mm_shuffle_epi32(x, _MM_SHUFFLE(1, 0, 3, 2)));
  x = _mm_add_epi32(x, _mm_shuffle_epi32(x, _MM_SHUFFLE(2, 3, 0, 1)));
  return _mm_cvtsi128_si32(x);
}

// gemv (isa.h) on int16 A (q - zp): 16 depth elements per step, weights widened to int16 and
// multiplied pairwise with vpmaddwd (exact, see above); four output channels at a time.
template <int M>
void gemv_rows(const GemvArgs& g) {
  const int steps = (g.depth + 15) / 16;
  const int tail = g.depth - (steps - 1) * 16;  // depth elements in the last step (1..16)
  const Clamp cl = make_clamp(*g.stage);
  alignas(32) int32_t sums[M][8];
  for (int n0 = g.n_begin; n0 < g.n_end; n0 += 8) {
    const int nv = g.n_end - n0 < 8 ? g.n_end - n0 : 8;
    for (int j = 0; j < nv; j += 4) {
      const int nc = nv - j < 4 ? nv - j : 4;
      const int8_t* w = g.w + static_cast<size_t>(n0 + j) * g.depth;
      __m256i acc[M][4];
#pragma GCC unroll 4
      for (int r = 0; r < M; ++r)
#pragma GCC unroll 4
        for (int c = 0; c < 4; ++c) acc[r][c] = _mm256_setzero_si256();
      for (int k = 0; k < steps; ++k) {
        __m256i wv[4];
#pragma GCC unroll 4
        for (int c = 0; c < 4; ++c) {
          const int8_t* src = w + static_cast<size_t>(c) * g.depth + 16 * static_cast<size_t>(k);
          __m128i w8 = _mm_setzero_si128();
          if (c < nc) {
            if (k < steps - 1 || tail == 16) {
              w8 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src));
            } else {  // the end of the row: do not read past it
              alignas(16) int8_t tmp[16] = {};
              for (int i = 0; i < tail; ++i) tmp[i] = src[i];
              w8 = _mm_load_si128(reinterpret_cast<const __m128i*>(tmp));
            }
          }
          wv[c] = _mm256_cvtepi8_epi16(w8);
        }
#pragma GCC unroll 4
        for (int r = 0; r < M; ++r) {
          const __m256i av = _mm256_loadu_si256(
              reinterpret_cast<const __m256i*>(g.a + r * g.lda + 32 * static_cast<size_t>(k)));
#pragma GCC unroll 4
          for (int c = 0; c < 4; ++c) {
            acc[r][c] = _mm256_add_epi32(acc[r][c], _mm256_madd_epi16(av, wv[c]));
          }
        }
      }
      for (int c = 0; c < nc; ++c) {
#pragma GCC unroll 4
        for (int r = 0; r < M; ++r) sums[r][j + c] = reduce8(acc[r][c]);
      }
    }
    const Stage8& st = stage_at(*g.stage, n0);
#pragma GCC unroll 4
    for (int r = 0; r < M; ++r) {
      store8(g.c + r * g.ldc + n0,
             requant(_mm256_load_si256(reinterpret_cast<const __m256i*>(sums[r])), st, cl), nv);
    }
  }
}

void gemv(const GemvArgs& g) {
  switch (g.m) {
    case 4:
      return gemv_rows<4>(g);
    case 3:
      return gemv_rows<3>(g);
    case 2:
      return gemv_rows<2>(g);
    default:
      return gemv_rows<1>(g);
  }
}

void max_window(const MaxWindowArgs& a) {
  const __m256i lo = _mm256_set1_epi8(a.lo), hi = _mm256_set1_epi8(a.hi);
  int c0 = 0;
  for (; c0 + 32 <= a.channels; c0 += 32) {
    __m256i m = _mm256_set1_epi8(-128);
    for (int y = 0; y < a.rows; ++y) {
      const int8_t* row = a.first + y * a.row_stride + c0;
      for (int x = 0; x < a.cols; ++x) {
        m = _mm256_max_epi8(
            m, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + x * a.channels)));
      }
    }
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(a.out + c0),
                        _mm256_min_epi8(_mm256_max_epi8(m, lo), hi));
  }
  for (; c0 < a.channels; ++c0) {  // the last channels, one by one
    int8_t m = -128;
    for (int y = 0; y < a.rows; ++y) {
      for (int x = 0; x < a.cols; ++x) {
        const int8_t v = a.first[y * a.row_stride + static_cast<size_t>(x) * a.channels + c0];
        m = v > m ? v : m;
      }
    }
    m = m < a.lo ? a.lo : m;
    a.out[c0] = m > a.hi ? a.hi : m;
  }
}

void quantize(const QuantizeArgs& q) {
  const __m256 scale = _mm256_set1_ps(q.scale);
  const __m256 lo = _mm256_set1_ps(-1024.0f), hi = _mm256_set1_ps(1024.0f);
  const __m256i zp = _mm256_set1_epi32(q.zero_point);
  const __m256i qmin = _mm256_set1_epi32(-128), qmax = _mm256_set1_epi32(127);
  for (size_t i = 0; i < q.count; i += 8) {
    const size_t left = q.count - i;
    __m256 x;
    if (left >= 8) {
      x = _mm256_loadu_ps(q.x + i);
    } else {  // the last values: do not read past the input
      alignas(32) float tmp[8] = {};
      for (size_t k = 0; k < left; ++k) tmp[k] = q.x[i + k];
      x = _mm256_load_ps(tmp);
    }
    __m256 v = _mm256_div_ps(x, scale);  // the same IEEE division as the scalar code
    const __m256 nan = _mm256_cmp_ps(v, v, _CMP_UNORD_Q);
    v = _mm256_min_ps(_mm256_max_ps(v, lo), hi);
    v = _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);  // half to even
    __m256i t = _mm256_andnot_si256(_mm256_castps_si256(nan), _mm256_cvttps_epi32(v));
    t = _mm256_min_epi32(_mm256_max_epi32(_mm256_add_epi32(t, zp), qmin), qmax);
    store8(q.out + i, t, left >= 8 ? 8 : static_cast<int>(left));
  }
}

constexpr IsaKernels make_kernels() {
  IsaKernels k{};
  k.isa = Isa::kAvx2;
  k.name = "avx2";
  k.a_elem = 2;
  k.kgroup = 2;
  k.panel = kPanel;
  k.n_unit = 8;
  k.mr = 8;
  k.gemm = &gemm;
  k.gemv = &gemv;
  k.dw_layout = kDepthwiseInt16;
  k.depthwise_row = &depthwise_row;
  k.add = &add;
  k.max_window = &max_window;
  k.quantize = &quantize;
  k.prepare_stage = &prepare_stage;
  k.prepare_depthwise_stage = &prepare_stage;
  return k;
}

}  // namespace

extern const IsaKernels kAvx2Kernels = make_kernels();

}  // namespace edgeqat::runtime::fast::detail
