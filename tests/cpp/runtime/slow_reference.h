// Slow, obvious references for the runtime tests, written independently of the library:
//  - requantization as an exact rational rounding in 128-bit integers (quotient and remainder,
//    not the library's add-and-shift);
//  - conv over an explicitly padded copy of the input (filled with the input zero point), with
//    the output size found by counting window positions, int64 accumulation;
//  - depthwise as a grouped conv with a rearranged filter;
//  - pooling with exact rational rounding of the average.
// Nothing here calls a library kernel.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <stdexcept>
#include <vector>

#include "edgeqat/runtime/runtime.h"

namespace rt_test {

using edgeqat::runtime::QuantizedMultiplier;
using edgeqat::runtime::Shape4;
__extension__ typedef __int128 i128;  // GCC / Clang extension, tests only

inline int64_t clamp64(int64_t v, int64_t lo, int64_t hi) { return std::min(std::max(v, lo), hi); }

inline int32_t sat32(i128 v) {
  const i128 lo = std::numeric_limits<int32_t>::min(), hi = std::numeric_limits<int32_t>::max();
  return static_cast<int32_t>(v < lo ? lo : (v > hi ? hi : v));
}

// round(num / 2^k) to nearest, ties toward +infinity, exactly.
inline i128 round_div_pow2_ties_up(i128 num, int k) {
  const i128 den = static_cast<i128>(1) << k;
  i128 q = num / den;  // truncates toward zero
  i128 r = num % den;  // same sign as num
  if (r < 0) {         // make it a floor division: 0 <= r < den
    q -= 1;
    r += den;
  }
  if (2 * r >= den) q += 1;  // at or above one half: up (ties toward +inf)
  return q;
}

// x * M0 * 2^(shift - 31) rounded, ties toward +inf, saturated to int32.
inline int32_t ref_requant(int64_t x, QuantizedMultiplier m) {
  return sat32(round_div_pow2_ties_up(static_cast<i128>(x) * m.multiplier, 31 - m.shift));
}

inline int8_t ref_output(int64_t acc, QuantizedMultiplier m, int32_t zp, int32_t lo, int32_t hi) {
  const int32_t acc32 = sat32(acc);  // the library saturates acc + bias to int32
  return static_cast<int8_t>(clamp64(int64_t{ref_requant(acc32, m)} + zp, lo, hi));
}

// Number of window positions along one axis, by counting (no closed formula).
inline int count_positions(int padded, int kernel, int stride, int dilation) {
  int n = 0;
  for (int start = 0; start + (kernel - 1) * dilation < padded; start += stride) ++n;
  return n;
}

struct ConvProblem {
  Shape4 in;       // NHWC
  Shape4 filter;   // OHWI, c = in.c / groups
  edgeqat::runtime::ConvParams p;
  std::vector<int8_t> input, weights;
  std::vector<int32_t> bias;  // empty: no bias
  std::vector<QuantizedMultiplier> mult;
};

inline Shape4 ref_conv_output_shape(const ConvProblem& c) {
  return {c.in.n,
          count_positions(c.in.h + c.p.padding.top + c.p.padding.bottom, c.filter.h, c.p.stride_h,
                          c.p.dilation_h),
          count_positions(c.in.w + c.p.padding.left + c.p.padding.right, c.filter.w, c.p.stride_w,
                          c.p.dilation_w),
          c.filter.n};
}

inline std::vector<int8_t> ref_conv(const ConvProblem& c) {
  const auto& p = c.p;
  const int H = c.in.h + p.padding.top + p.padding.bottom;
  const int W = c.in.w + p.padding.left + p.padding.right;
  const int C = c.in.c;
  // The padded input: every padding pixel holds the input zero point (real 0).
  std::vector<int32_t> padded(static_cast<size_t>(c.in.n) * H * W * C, p.input_zero_point);
  for (int b = 0; b < c.in.n; ++b)
    for (int y = 0; y < c.in.h; ++y)
      for (int x = 0; x < c.in.w; ++x)
        for (int ch = 0; ch < C; ++ch)
          padded[((static_cast<size_t>(b) * H + y + p.padding.top) * W + x + p.padding.left) * C +
                 ch] = c.input[((static_cast<size_t>(b) * c.in.h + y) * c.in.w + x) * C + ch];
  const Shape4 out = ref_conv_output_shape(c);
  const int cin_g = C / p.groups, cout_g = out.c / p.groups;
  std::vector<int8_t> result(static_cast<size_t>(out.n) * out.h * out.w * out.c);
  for (int b = 0; b < out.n; ++b)
    for (int oy = 0; oy < out.h; ++oy)
      for (int ox = 0; ox < out.w; ++ox)
        for (int oc = 0; oc < out.c; ++oc) {
          const int g = oc / cout_g;
          int64_t acc = c.bias.empty() ? 0 : c.bias[oc];
          for (int ky = 0; ky < c.filter.h; ++ky)
            for (int kx = 0; kx < c.filter.w; ++kx)
              for (int i = 0; i < cin_g; ++i) {
                const int y = oy * p.stride_h + ky * p.dilation_h;
                const int x = ox * p.stride_w + kx * p.dilation_w;
                const int64_t q =
                    padded[((static_cast<size_t>(b) * H + y) * W + x) * C + g * cin_g + i];
                const int64_t w =
                    c.weights[((static_cast<size_t>(oc) * c.filter.h + ky) * c.filter.w + kx) *
                                  cin_g +
                              i];
                acc += w * (q - p.input_zero_point);
              }
          result[((static_cast<size_t>(b) * out.h + oy) * out.w + ox) * out.c + oc] =
              ref_output(acc, c.mult[oc], p.output_zero_point, p.act_min, p.act_max);
        }
  return result;
}

// round(sum / count), ties away from zero, exactly.
inline int64_t ref_round_div_away(int64_t sum, int64_t count) {
  const int64_t a = sum < 0 ? -sum : sum;
  int64_t q = a / count;
  if (2 * (a % count) >= count) ++q;
  return sum < 0 ? -q : q;
}

// Pooling: visits every window tap and skips the ones outside the image.
inline std::vector<int8_t> ref_pool(const edgeqat::runtime::PoolParams& p, const Shape4& in,
                                    const std::vector<int8_t>& input, bool average) {
  const int oh =
      count_positions(in.h + p.padding.top + p.padding.bottom, p.filter_h, p.stride_h, 1);
  const int ow =
      count_positions(in.w + p.padding.left + p.padding.right, p.filter_w, p.stride_w, 1);
  std::vector<int8_t> out(static_cast<size_t>(in.n) * oh * ow * in.c);
  for (int b = 0; b < in.n; ++b)
    for (int oy = 0; oy < oh; ++oy)
      for (int ox = 0; ox < ow; ++ox)
        for (int c = 0; c < in.c; ++c) {
          int64_t sum = 0, count = 0, best = std::numeric_limits<int64_t>::min();
          for (int ky = 0; ky < p.filter_h; ++ky)
            for (int kx = 0; kx < p.filter_w; ++kx) {
              const int y = oy * p.stride_h + ky - p.padding.top;
              const int x = ox * p.stride_w + kx - p.padding.left;
              if (y < 0 || y >= in.h || x < 0 || x >= in.w) continue;
              const int64_t q = input[((static_cast<size_t>(b) * in.h + y) * in.w + x) * in.c + c];
              sum += q;
              ++count;
              best = std::max(best, q);
            }
          if (count == 0) throw std::logic_error("ref_pool: empty window");
          const int64_t v = average ? ref_round_div_away(sum, count) : best;
          out[((static_cast<size_t>(b) * oh + oy) * ow + ox) * in.c + c] =
              static_cast<int8_t>(clamp64(v, p.act_min, p.act_max));
        }
  return out;
}

// Random helpers.
inline int uniform(std::mt19937_64& rng, int lo, int hi) {
  return std::uniform_int_distribution<int>(lo, hi)(rng);
}

inline std::vector<int8_t> random_int8(std::mt19937_64& rng, size_t n, int lo = -128,
                                       int hi = 127) {
  std::vector<int8_t> v(n);
  for (auto& x : v) x = static_cast<int8_t>(uniform(rng, lo, hi));
  return v;
}

// A realistic per-channel multiplier (s_in * s_w / s_out is typically 1e-5 .. 1), sometimes an
// arbitrary valid raw one (shift > 0 included, to exercise saturation).
inline QuantizedMultiplier random_multiplier(std::mt19937_64& rng) {
  if (uniform(rng, 0, 7) == 0) {
    return {std::uniform_int_distribution<int32_t>(0, std::numeric_limits<int32_t>::max())(rng),
            uniform(rng, edgeqat::runtime::kMinShift, edgeqat::runtime::kMaxShift)};
  }
  const double log2m = std::uniform_real_distribution<double>(-18.0, 1.0)(rng);
  return edgeqat::runtime::quantize_multiplier(std::exp2(log2m));
}

}  // namespace rt_test
