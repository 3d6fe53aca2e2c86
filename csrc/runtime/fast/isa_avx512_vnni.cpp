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
// The output stage of 16 consecutive channels, precomputed once per call (prepare_stage) and
// split into even / odd lanes for the 64-bit products (vpmuldq multiplies the low int32 of each
// int64 lane). 512 bytes = 16 channels * kPreparedBytesPerChannel.
struct Stage16 {
  __m512i offset;  // offset, plus the bias when the bias cannot saturate (isa.h)
  __m512i bias;
  __m512i mult_even, mult_odd, shift_even, shift_odd, round_even, round_odd;
};
static_assert(sizeof(Stage16) == 16 * kPreparedBytesPerChannel, "prepared stage layout");

struct Clamp {
  __m512i lo, hi;      // int64: act_min - zp, act_max - zp
  __m512i lo32, hi32;  // the same in int32 lanes
  __m512i zp;          // int32
  bool saturate;       // OutputStage::bias_saturates
  bool narrow;         // OutputStage::narrow
};

void prepare_stage(const OutputStage& s, int channels, void* dst) {
  auto* out = static_cast<Stage16*>(dst);
  const __m512i one = _mm512_set1_epi64(1);
  for (int n = 0; n < channels; n += 16) {
    Stage16 r;
    const __m512i offset = _mm512_loadu_si512(s.offset + n);
    r.bias = _mm512_loadu_si512(s.bias + n);
    // Without saturation, acc + offset + bias in one wrapping add: the true sum fits in int32.
    r.offset = s.bias_saturates ? offset : _mm512_add_epi32(offset, r.bias);
    const __m512i mult = _mm512_loadu_si512(s.multiplier + n);
    const __m512i shift = _mm512_loadu_si512(s.right_shift + n);
    r.mult_even = mult;
    r.mult_odd = _mm512_srli_epi64(mult, 32);
    r.shift_even = _mm512_and_si512(shift, _mm512_set1_epi64(0xFFFFFFFFll));
    r.shift_odd = _mm512_srli_epi64(shift, 32);
    r.round_even = _mm512_sllv_epi64(one, _mm512_sub_epi64(r.shift_even, one));
    r.round_odd = _mm512_sllv_epi64(one, _mm512_sub_epi64(r.shift_odd, one));
    out[n / 16] = r;
  }
}

#define EDGEQAT_INLINE inline __attribute__((always_inline))

EDGEQAT_INLINE const Stage16& stage_at(const OutputStage& s, int n) {  // n a multiple of 16
  return static_cast<const Stage16*>(s.prepared)[n / 16];
}

Clamp make_clamp(const OutputStage& s) {
  return {_mm512_set1_epi64(s.out_min),
          _mm512_set1_epi64(s.out_max),
          _mm512_set1_epi32(s.out_min),
          _mm512_set1_epi32(s.out_max),
          _mm512_set1_epi32(s.zero_point),
          s.bias_saturates != 0,
          s.narrow != 0};
}

// requantize_output of 16 raw accumulators (see OutputStage in isa.h), as int32 lanes.
EDGEQAT_INLINE __m512i requant(__m512i acc, const Stage16& s, const Clamp& c) {
  const __m512i x = _mm512_add_epi32(acc, s.offset);  // mod 2^32: exact, see above
  __m512i t = x;
  if (c.saturate) {
    // saturate_int32(int64(x) + bias): the int32 sum overflowed iff x and bias have the same
    // sign and the sum the other one; it then saturates toward x's sign.
    const __m512i sum = _mm512_add_epi32(x, s.bias);
    const __m512i ovf_sign =
        _mm512_and_si512(_mm512_xor_si512(x, sum), _mm512_xor_si512(s.bias, sum));
    const __mmask16 ovf = _mm512_cmplt_epi32_mask(ovf_sign, _mm512_setzero_si512());
    const __m512i sat = _mm512_xor_si512(_mm512_srai_epi32(x, 31), _mm512_set1_epi32(0x7FFFFFFF));
    t = _mm512_mask_blend_epi32(ovf, sum, sat);
  }
  // (t * multiplier + 2^(s - 1)) >> s in 64 bits: |t * multiplier| < 2^62, s in [1, 62].
  __m512i even = _mm512_mul_epi32(t, s.mult_even);
  __m512i odd = _mm512_mul_epi32(_mm512_srli_epi64(t, 32), s.mult_odd);
  even = _mm512_srav_epi64(_mm512_add_epi64(even, s.round_even), s.shift_even);
  odd = _mm512_srav_epi64(_mm512_add_epi64(odd, s.round_odd), s.shift_odd);
  __m512i r;
  if (c.narrow) {  // the results fit in int32 lanes: clamp there
    r = _mm512_mask_blend_epi32(0xAAAA, even, _mm512_slli_epi64(odd, 32));
    r = _mm512_min_epi32(_mm512_max_epi32(r, c.lo32), c.hi32);
  } else {
    even = _mm512_min_epi64(_mm512_max_epi64(even, c.lo), c.hi);
    odd = _mm512_min_epi64(_mm512_max_epi64(odd, c.lo), c.hi);
    r = _mm512_mask_blend_epi32(0xAAAA, even, _mm512_slli_epi64(odd, 32));
  }
  return _mm512_add_epi32(r, c.zp);
}

EDGEQAT_INLINE __mmask16 lanes(int valid) {  // the first min(valid, 16) lanes
  return valid >= 16 ? static_cast<__mmask16>(0xFFFF)
                     : static_cast<__mmask16>((1u << (valid > 0 ? valid : 0)) - 1u);
}

// Stores the first min(valid, 16) int32 lanes of v (already in int8 range) as bytes. (The
// register form of vpmovdb and a plain store: the memory form is slow on some CPUs.)
EDGEQAT_INLINE void store16(int8_t* dst, __m512i v, int valid) {
  const __m128i b = _mm512_cvtepi32_epi8(v);
  if (valid >= 16) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst), b);
  } else {
    _mm_mask_storeu_epi8(dst, lanes(valid), b);
  }
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
    const Stage16& s = stage_at(st, n0 + v * 16);
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      store16(c + r * ldc + v * 16, requant(acc[r][v], s, cl), valid - v * 16);
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

// Depthwise (layout kDepthwiseVnni of isa.h): vpdpbusd over four taps per int32 lane. Per
// output pixel, the four tap vectors of a tap group (64 channels of u8 = q + 128 each, or the
// zero point + 128 for a tap in the padding, which the offset then cancels exactly as in the
// GEMM) are interleaved with unpacklo / unpackhi into four vectors whose lanes hold four taps of
// one channel; the packed weights follow the same channel order, and the four accumulators are
// put back into channel order (a 4 x 4 transpose of 128-bit lanes) before the output stage.
struct DepthwiseConsts {
  __m512i flip, pad;
  Clamp cl;
  int channels, groups, c_begin, c_end;
  const uint8_t* weights;
  const Stage16* stage;
};

// One output pixel, all channels. tap(t) is the input pixel of tap t or null (padding, or
// t >= taps); kTapsMayBeNull false: every tap t < taps is inside the image (interior pixels).
template <bool kTapsMayBeNull, class Tap>
EDGEQAT_INLINE void depthwise_pixel(const DepthwiseConsts& k, int taps, Tap tap, int8_t* out) {
  for (int c0 = k.c_begin; c0 < k.c_end; c0 += 64) {
    const int valid = k.c_end - c0 < 64 ? k.c_end - c0 : 64;
    const __mmask64 mask = valid == 64 ? ~__mmask64{0} : ((__mmask64{1} << valid) - 1);
    const uint8_t* wb = k.weights + static_cast<size_t>(c0 / 64) * k.groups * 256;
    __m512i acc0 = _mm512_setzero_si512(), acc1 = _mm512_setzero_si512();
    __m512i acc2 = _mm512_setzero_si512(), acc3 = _mm512_setzero_si512();
    for (int g = 0; g < k.groups; ++g) {
      __m512i x[4];
#pragma GCC unroll 4
      for (int i = 0; i < 4; ++i) {
        const int t = 4 * g + i;
        const int8_t* p = t < taps ? tap(t) : nullptr;
        x[i] = (!kTapsMayBeNull && t < taps) || p != nullptr
                   ? _mm512_xor_si512(_mm512_maskz_loadu_epi8(mask, p + c0), k.flip)
                   : k.pad;
      }
      const __m512i a = _mm512_unpacklo_epi8(x[0], x[1]), b = _mm512_unpackhi_epi8(x[0], x[1]);
      const __m512i c = _mm512_unpacklo_epi8(x[2], x[3]), e = _mm512_unpackhi_epi8(x[2], x[3]);
      const uint8_t* w = wb + static_cast<size_t>(g) * 256;
      acc0 = _mm512_dpbusd_epi32(acc0, _mm512_unpacklo_epi16(a, c), _mm512_load_si512(w));
      acc1 = _mm512_dpbusd_epi32(acc1, _mm512_unpackhi_epi16(a, c), _mm512_load_si512(w + 64));
      acc2 = _mm512_dpbusd_epi32(acc2, _mm512_unpacklo_epi16(b, e), _mm512_load_si512(w + 128));
      acc3 = _mm512_dpbusd_epi32(acc3, _mm512_unpackhi_epi16(b, e), _mm512_load_si512(w + 192));
    }
    // acc_j's 128-bit lane L holds channels 16 L + 4 j .. + 3; the stage prepared by
    // prepare_depthwise_stage is in the same order. Packing acc0 / acc1 and acc2 / acc3 to
    // int16 and then to int8 (within 128-bit lanes) puts lane L's bytes in channel order
    // 16 L .. 16 L + 15: one 64-byte store. (Values are in int8 range: no saturation.)
    const Stage16* st = k.stage + c0 / 16;
    const __m512i r01 = _mm512_packs_epi32(requant(acc0, st[0], k.cl), requant(acc1, st[1], k.cl));
    const __m512i r23 = _mm512_packs_epi32(requant(acc2, st[2], k.cl), requant(acc3, st[3], k.cl));
    _mm512_mask_storeu_epi8(out + c0, mask, _mm512_packs_epi16(r01, r23));
  }
}

// Two interior output pixels at once when there are at most 32 channels: pixel 0 in bytes
// 0..31 of each vector, pixel 1 in bytes 32..63, where the packed weights and the prepared stage
// repeat channels 0..31 (isa.h); halves the work per pixel of such layers.
EDGEQAT_INLINE void depthwise_pair(const DepthwiseConsts& k, int taps, const int64_t* offset,
                                   const int8_t* corner0, const int8_t* corner1, int8_t* out0,
                                   int8_t* out1) {
  const __mmask32 mask = k.channels >= 32 ? static_cast<__mmask32>(~0u)
                                          : static_cast<__mmask32>((1u << k.channels) - 1u);
  __m512i acc0 = _mm512_setzero_si512(), acc1 = _mm512_setzero_si512();
  __m512i acc2 = _mm512_setzero_si512(), acc3 = _mm512_setzero_si512();
  for (int g = 0; g < k.groups; ++g) {
    __m512i x[4];
#pragma GCC unroll 4
    for (int i = 0; i < 4; ++i) {
      const int t = 4 * g + i;
      if (t < taps) {
        const __m256i lo = _mm256_maskz_loadu_epi8(mask, corner0 + offset[t]);
        const __m256i hi = _mm256_maskz_loadu_epi8(mask, corner1 + offset[t]);
        x[i] = _mm512_xor_si512(_mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1), k.flip);
      } else {
        x[i] = k.pad;
      }
    }
    const __m512i a = _mm512_unpacklo_epi8(x[0], x[1]), b = _mm512_unpackhi_epi8(x[0], x[1]);
    const __m512i c = _mm512_unpacklo_epi8(x[2], x[3]), e = _mm512_unpackhi_epi8(x[2], x[3]);
    const uint8_t* w = k.weights + static_cast<size_t>(g) * 256;
    acc0 = _mm512_dpbusd_epi32(acc0, _mm512_unpacklo_epi16(a, c), _mm512_load_si512(w));
    acc1 = _mm512_dpbusd_epi32(acc1, _mm512_unpackhi_epi16(a, c), _mm512_load_si512(w + 64));
    acc2 = _mm512_dpbusd_epi32(acc2, _mm512_unpacklo_epi16(b, e), _mm512_load_si512(w + 128));
    acc3 = _mm512_dpbusd_epi32(acc3, _mm512_unpackhi_epi16(b, e), _mm512_load_si512(w + 192));
  }
  const Stage16* st = k.stage;
  const __m512i r01 = _mm512_packs_epi32(requant(acc0, st[0], k.cl), requant(acc1, st[1], k.cl));
  const __m512i r23 = _mm512_packs_epi32(requant(acc2, st[2], k.cl), requant(acc3, st[3], k.cl));
  const __m512i r = _mm512_packs_epi16(r01, r23);
  _mm256_mask_storeu_epi8(out0, mask, _mm512_castsi512_si256(r));
  _mm256_mask_storeu_epi8(out1, mask, _mm512_extracti64x4_epi64(r, 1));
}

void depthwise_row(const DepthwiseRowArgs& d) {
  const int channels = d.channels, taps = d.kh * d.kw;
  DepthwiseConsts k;
  k.flip = _mm512_set1_epi8(static_cast<char>(0x80));
  k.pad = _mm512_set1_epi8(static_cast<char>(static_cast<uint8_t>(d.input_zero_point + 128)));
  k.cl = make_clamp(*d.stage);
  k.channels = channels;
  k.c_begin = d.c_begin;
  k.c_end = d.c_end;
  k.groups = (taps + 3) / 4;
  k.weights = static_cast<const uint8_t*>(d.weights);
  k.stage = static_cast<const Stage16*>(d.stage->prepared);
  // Scratch: per tap its input offset from the window's corner, then per tap a pointer.
  auto* offset = static_cast<int64_t*>(d.scratch);
  auto** ptr = reinterpret_cast<const int8_t**>(offset + taps);
  const int64_t row = int64_t{d.in_w} * channels;
  const int64_t y0 = int64_t{d.oy} * d.stride_h - d.pad_top;
  bool rows_inside = true;
  for (int ky = 0, t = 0; ky < d.kh; ++ky) {
    const int64_t iy = y0 + int64_t{ky} * d.dilation_h;
    rows_inside = rows_inside && iy >= 0 && iy < d.in_h;
    for (int kx = 0; kx < d.kw; ++kx, ++t) {
      offset[t] = int64_t{ky} * d.dilation_h * row + int64_t{kx} * d.dilation_w * channels;
    }
  }
  // Output columns whose window lies inside the image horizontally: [ox_begin, ox_end).
  const int64_t span = int64_t{d.kw - 1} * d.dilation_w;  // from the first tap to the last
  int64_t ox_begin = (d.pad_left + d.stride_w - 1) / d.stride_w;
  int64_t ox_end =
      d.in_w - 1 - span + d.pad_left >= 0 ? (d.in_w - 1 - span + d.pad_left) / d.stride_w + 1 : 0;
  if (!rows_inside) ox_begin = ox_end = 0;
  ox_end = ox_end < d.out_w ? ox_end : d.out_w;
  if (ox_begin > ox_end) ox_begin = ox_end;
  const bool pairs = channels <= 32;  // see depthwise_pair
  for (int ox = 0; ox < d.out_w; ++ox) {
    const int64_t x0 = int64_t{ox} * d.stride_w - d.pad_left;
    int8_t* out = d.output + static_cast<size_t>(ox) * channels;
    if (pairs && ox >= ox_begin && ox + 1 < ox_end) {
      const int8_t* corner = d.input + y0 * row + x0 * channels;
      depthwise_pair(k, taps, offset, corner, corner + int64_t{d.stride_w} * channels, out,
                     out + channels);
      ++ox;
      continue;
    }
    if (ox >= ox_begin && ox < ox_end) {
      const int8_t* corner = d.input + y0 * row + x0 * channels;
      depthwise_pixel<false>(k, taps, [&](int t) { return corner + offset[t]; }, out);
      continue;
    }
    for (int ky = 0, t = 0; ky < d.kh; ++ky) {
      const int64_t iy = y0 + int64_t{ky} * d.dilation_h;
      const bool row_in = iy >= 0 && iy < d.in_h;
      const int8_t* line = d.input + iy * row;
      for (int kx = 0; kx < d.kw; ++kx, ++t) {
        const int64_t ix = x0 + int64_t{kx} * d.dilation_w;
        ptr[t] = row_in && ix >= 0 && ix < d.in_w ? line + ix * channels : nullptr;
      }
    }
    depthwise_pixel<true>(k, taps, [&](int t) { return ptr[t]; }, out);
  }
}

// 4 x 4 transpose of the 128-bit lanes of v[0..3] (in place).
EDGEQAT_INLINE void transpose_lanes(__m512i* v) {
  const __m512i t0 = _mm512_shuffle_i32x4(v[0], v[1], _MM_SHUFFLE(1, 0, 1, 0));
  const __m512i t1 = _mm512_shuffle_i32x4(v[2], v[3], _MM_SHUFFLE(1, 0, 1, 0));
  const __m512i t2 = _mm512_shuffle_i32x4(v[0], v[1], _MM_SHUFFLE(3, 2, 3, 2));
  const __m512i t3 = _mm512_shuffle_i32x4(v[2], v[3], _MM_SHUFFLE(3, 2, 3, 2));
  v[0] = _mm512_shuffle_i32x4(t0, t1, _MM_SHUFFLE(2, 0, 2, 0));
  v[1] = _mm512_shuffle_i32x4(t0, t1, _MM_SHUFFLE(3, 1, 3, 1));
  v[2] = _mm512_shuffle_i32x4(t2, t3, _MM_SHUFFLE(2, 0, 2, 0));
  v[3] = _mm512_shuffle_i32x4(t2, t3, _MM_SHUFFLE(3, 1, 3, 1));
}

// The depthwise kernel's stage: per block of 64 channels, Stage16 j lane (L, s) is channel
// 16 L + 4 j + s, the order of its accumulators. From the natural order (Stage16 k lane (j, s)
// is channel 16 k + 4 j + s) that is a 4 x 4 transpose of 128-bit lanes, field by field.
void prepare_depthwise_stage(const OutputStage& s, int channels, void* dst) {
  prepare_stage(s, channels, dst);
  auto* v = static_cast<__m512i*>(dst);  // [channels / 16][8 fields]
  constexpr int kFields = sizeof(Stage16) / sizeof(__m512i);
  for (int b = 0; b < channels / 64; ++b) {
    for (int f = 0; f < kFields; ++f) {
      __m512i x[4];
      for (int k = 0; k < 4; ++k) x[k] = v[(4 * b + k) * kFields + f];
      transpose_lanes(x);
      for (int k = 0; k < 4; ++k) v[(4 * b + k) * kFields + f] = x[k];
    }
  }
}

// Uniform-multiplier requantization of 16 int32 lanes, exact in 64 bits (shift in [1, 62]):
// (x * m + 2^(s - 1)) >> s, clamped to [lo, hi] (int64 lanes) if kClamp, back in int32 lanes
// (without the clamp the caller knows the result fits in int32).
template <bool kClamp>
__m512i requant_uniform(__m512i x, __m512i m, __m512i round, __m128i shift, __m512i lo,
                        __m512i hi) {
  __m512i even = _mm512_mul_epi32(x, m);
  __m512i odd = _mm512_mul_epi32(_mm512_srli_epi64(x, 32), m);
  even = _mm512_sra_epi64(_mm512_add_epi64(even, round), shift);
  odd = _mm512_sra_epi64(_mm512_add_epi64(odd, round), shift);
  if (kClamp) {
    even = _mm512_min_epi64(_mm512_max_epi64(even, lo), hi);
    odd = _mm512_min_epi64(_mm512_max_epi64(odd, lo), hi);
  }
  return _mm512_mask_blend_epi32(0xAAAA, even, _mm512_slli_epi64(odd, 32));
}

// Add (AddParams' arithmetic, see reference add): 16 values per step.
void add(const AddArgs& a) {
  const __m512i zp1 = _mm512_set1_epi32(a.zp1), zp2 = _mm512_set1_epi32(a.zp2);
  const __m128i ls = _mm_cvtsi32_si128(a.left_shift);
  const __m512i m1 = _mm512_set1_epi32(a.m1), m2 = _mm512_set1_epi32(a.m2);
  const __m512i mo = _mm512_set1_epi32(a.mo);
  const __m512i r1 = _mm512_set1_epi64(int64_t{1} << (a.rs1 - 1));
  const __m512i r2 = _mm512_set1_epi64(int64_t{1} << (a.rs2 - 1));
  const __m512i ro = _mm512_set1_epi64(int64_t{1} << (a.rso - 1));
  const __m128i s1 = _mm_cvtsi32_si128(a.rs1), s2 = _mm_cvtsi32_si128(a.rs2);
  const __m128i so = _mm_cvtsi32_si128(a.rso);
  const __m512i lo = _mm512_set1_epi64(a.out_min), hi = _mm512_set1_epi64(a.out_max);
  const __m512i zp = _mm512_set1_epi32(a.zero_point);
  for (size_t i = 0; i < a.count; i += 16) {
    const size_t left = a.count - i;
    const __mmask16 mask =
        left >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << left) - 1u);
    const __m512i q1 = _mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(mask, a.a + i));
    const __m512i q2 = _mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(mask, a.b + i));
    // (q - zp) << left_shift: |.| <= 255 * 2^20 < 2^28.
    const __m512i x1 = _mm512_sll_epi32(_mm512_sub_epi32(q1, zp1), ls);
    const __m512i x2 = _mm512_sll_epi32(_mm512_sub_epi32(q2, zp2), ls);
    // Scaled by multipliers below 1 (check_add): below 2^28, no saturation; their sum fits.
    const __m512i sum = _mm512_add_epi32(requant_uniform<false>(x1, m1, r1, s1, lo, hi),
                                         requant_uniform<false>(x2, m2, r2, s2, lo, hi));
    const __m512i r = _mm512_add_epi32(requant_uniform<true>(sum, mo, ro, so, lo, hi), zp);
    store16(a.out + i, r, left >= 16 ? 16 : static_cast<int>(left));
  }
}

// gemv (isa.h): rows of A against unpacked weight rows, 64 depth bytes per step; four output
// channels at a time, each with one accumulator per row and one for sum_k w (vpdpbusd with
// ones), reduced horizontally at the end; then the output stage over 16 channels.
template <int M>
void gemv_rows(const GemvArgs& g) {
  const int steps = (g.depth + 63) / 64;
  const __mmask64 tail = g.depth % 64 ? (__mmask64{1} << (g.depth % 64)) - 1 : ~__mmask64{0};
  const __m512i ones = _mm512_set1_epi8(1);
  const auto correction = static_cast<uint32_t>(128 + g.input_zero_point);
  const Clamp cl = make_clamp(*g.stage);
  alignas(64) int32_t sums[M][16];
  for (int n0 = g.n_begin; n0 < g.n_end; n0 += 16) {
    const int nv = g.n_end - n0 < 16 ? g.n_end - n0 : 16;
    for (int j = 0; j < nv; j += 4) {
      const int nc = nv - j < 4 ? nv - j : 4;
      const int8_t* w = g.w + static_cast<size_t>(n0 + j) * g.depth;
      __m512i acc[M][4], sw[4];
#pragma GCC unroll 4
      for (int c = 0; c < 4; ++c) {
        sw[c] = _mm512_setzero_si512();
#pragma GCC unroll 4
        for (int r = 0; r < M; ++r) acc[r][c] = _mm512_setzero_si512();
      }
      for (int k = 0; k < steps; ++k) {
        const __mmask64 mk = k == steps - 1 ? tail : ~__mmask64{0};
        __m512i wv[4];
#pragma GCC unroll 4
        for (int c = 0; c < 4; ++c) {
          // Rows past n_end are not read; their accumulators stay unused.
          wv[c] = c < nc ? _mm512_maskz_loadu_epi8(mk, w + static_cast<size_t>(c) * g.depth +
                                                           64 * static_cast<size_t>(k))
                         : _mm512_setzero_si512();
          sw[c] = _mm512_dpbusd_epi32(sw[c], ones, wv[c]);
        }
#pragma GCC unroll 4
        for (int r = 0; r < M; ++r) {
          const __m512i av = _mm512_loadu_si512(g.a + r * g.lda + 64 * static_cast<size_t>(k));
#pragma GCC unroll 4
          for (int c = 0; c < 4; ++c) acc[r][c] = _mm512_dpbusd_epi32(acc[r][c], av, wv[c]);
        }
      }
      for (int c = 0; c < nc; ++c) {
        // sum (q + 128) w - (128 + zp) sum w, mod 2^32: exact (see the GEMM).
        const auto wsum = static_cast<uint32_t>(_mm512_reduce_add_epi32(sw[c]));
#pragma GCC unroll 4
        for (int r = 0; r < M; ++r) {
          const auto total = static_cast<uint32_t>(_mm512_reduce_add_epi32(acc[r][c]));
          sums[r][j + c] = static_cast<int32_t>(total - correction * wsum);
        }
      }
    }
    const Stage16& st = stage_at(*g.stage, n0);
#pragma GCC unroll 4
    for (int r = 0; r < M; ++r) {
      store16(g.c + r * g.ldc + n0, requant(_mm512_load_si512(sums[r]), st, cl), nv);
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
  const __m512i lo = _mm512_set1_epi8(a.lo), hi = _mm512_set1_epi8(a.hi);
  for (int c0 = 0; c0 < a.channels; c0 += 64) {
    const int valid = a.channels - c0 < 64 ? a.channels - c0 : 64;
    const __mmask64 mask = valid == 64 ? ~__mmask64{0} : (__mmask64{1} << valid) - 1;
    __m512i m = _mm512_set1_epi8(-128);
    for (int y = 0; y < a.rows; ++y) {
      const int8_t* row = a.first + y * a.row_stride + c0;
      for (int x = 0; x < a.cols; ++x) {
        m = _mm512_max_epi8(m, _mm512_maskz_loadu_epi8(mask, row + x * a.channels));
      }
    }
    _mm512_mask_storeu_epi8(a.out + c0, mask, _mm512_min_epi8(_mm512_max_epi8(m, lo), hi));
  }
}

void quantize(const QuantizeArgs& q) {
  const __m512 scale = _mm512_set1_ps(q.scale);
  const __m512 lo = _mm512_set1_ps(-1024.0f), hi = _mm512_set1_ps(1024.0f);
  const __m512i zp = _mm512_set1_epi32(q.zero_point);
  const __m512i qmin = _mm512_set1_epi32(-128), qmax = _mm512_set1_epi32(127);
  for (size_t i = 0; i < q.count; i += 16) {
    const size_t left = q.count - i;
    const __mmask16 mask =
        left >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << left) - 1u);
    // The same IEEE division as the scalar code; NaN lanes become 0 (real 0: q = zp).
    __m512 v = _mm512_div_ps(_mm512_maskz_loadu_ps(mask, q.x + i), scale);
    const __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    v = _mm512_min_ps(_mm512_max_ps(v, lo), hi);
    // Round half to even by the instruction's own rounding mode, not MXCSR's.
    v = _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512i t = _mm512_maskz_mov_epi32(static_cast<__mmask16>(~nan), _mm512_cvttps_epi32(v));
    t = _mm512_min_epi32(_mm512_max_epi32(_mm512_add_epi32(t, zp), qmin), qmax);
    store16(q.out + i, t, left >= 16 ? 16 : static_cast<int>(left));
  }
}

constexpr IsaKernels make_kernels() {
  IsaKernels k{};
  k.isa = Isa::kAvx512Vnni;
  k.name = "avx512_vnni";
  k.a_elem = 1;
  k.kgroup = 4;
  k.panel = kPanel;
  k.n_unit = 16;
  k.mr = 48;  // a multiple of every tile height (6, 8, 12, 16)
  k.gemm = &gemm;
  k.gemv = &gemv;
  k.dw_layout = kDepthwiseVnni;
  k.depthwise_row = &depthwise_row;
  k.add = &add;
  k.max_window = &max_window;
  k.quantize = &quantize;
  k.prepare_stage = &prepare_stage;
  k.prepare_depthwise_stage = &prepare_depthwise_stage;
  return k;
}

}  // namespace

extern const IsaKernels kAvx512VnniKernels = make_kernels();

}  // namespace edgeqat::runtime::fast::detail
