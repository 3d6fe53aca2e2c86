// Reference average / max pooling and quantize / dequantize: hand-computed cases (ties away
// from zero, padding excluded from the count and from the max, global pooling, clamps),
// random problems against the slow reference, half-to-even quantization, NaN / inf, and
// rejected arguments.
#include <catch2/catch.hpp>

#include <cfenv>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <stdexcept>
#include <vector>

#include "edgeqat/runtime/runtime.h"
#include "slow_reference.h"

namespace rt = edgeqat::runtime;
using rt::PoolParams;
using rt::QuantizeParams;
using rt::Shape4;
using Catch::Matchers::Contains;

namespace {

std::vector<int8_t> to_i8(std::initializer_list<int> v) { return {v.begin(), v.end()}; }

std::vector<int8_t> avg(const PoolParams& p, const Shape4& in, const std::vector<int8_t>& x,
                        const Shape4& out) {
  std::vector<int8_t> y(static_cast<size_t>(rt::num_elements(out)), 99);
  rt::reference::average_pool2d(nullptr, p, in, x.data(), out, y.data());
  return y;
}

std::vector<int8_t> mx(const PoolParams& p, const Shape4& in, const std::vector<int8_t>& x,
                       const Shape4& out) {
  std::vector<int8_t> y(static_cast<size_t>(rt::num_elements(out)), 99);
  rt::reference::max_pool2d(nullptr, p, in, x.data(), out, y.data());
  return y;
}

std::vector<int8_t> quant(const QuantizeParams& p, const std::vector<float>& x) {
  std::vector<int8_t> y(x.size());
  rt::reference::quantize(nullptr, p, x.size(), x.data(), y.data());
  return y;
}

}  // namespace

TEST_CASE("average_pool2d: ties away from zero", "[runtime][pool]") {
  // 1x1 windows of width 2 over a 1x4 row with 2 channels.
  const PoolParams p = rt::make_pool_params(1, 2, 1, 2);
  // channel 0: [1, 2] -> 1.5 -> 2,  [-1, -2] -> -1.5 -> -2
  // channel 1: [3, 3] -> 3,         [-3, 4] -> 0.5 -> 1
  CHECK(avg(p, {1, 1, 4, 2}, to_i8({1, 3, 2, 3, -1, -3, -2, 4}), {1, 1, 2, 2}) ==
        to_i8({2, 3, -2, 1}));
  // Window of 3: 5/3 -> 2, -5/3 -> -2, 4/3 -> 1, -4/3 -> -1, 127*3/3.
  const PoolParams p3 = rt::make_pool_params(1, 3, 1, 3);
  CHECK(avg(p3, {1, 1, 15, 1}, to_i8({1, 2, 2, -1, -2, -2, 1, 1, 2, -1, -1, -2, 127, 127, 127}),
            {1, 1, 5, 1}) == to_i8({2, -2, 1, -1, 127}));
  // Window of 4 with -2.5 -> -3 and 2.5 -> 3, -128s.
  const PoolParams p4 = rt::make_pool_params(2, 2, 2, 2);
  CHECK(avg(p4, {1, 2, 6, 1}, to_i8({-1, -2, 1, 2, -128, -128, -3, -4, 3, 4, -128, -127}),
            {1, 1, 3, 1}) == to_i8({-3, 3, -128}));  // -10/4, 10/4, -511/4 = -127.75
}

TEST_CASE("average_pool2d: padding taps are not counted, global pooling, clamp",
          "[runtime][pool]") {
  // 2x2 image [[1, 2], [3, 4]], 3x3 window, padding 1, stride 1: every window covers the 4
  // pixels only: 10 / 4 = 2.5 -> 3 (counting the padding would give 10 / 9 -> 1).
  const PoolParams p = rt::make_pool_params(3, 3, 1, 1, {1, 1, 1, 1});
  CHECK(avg(p, {1, 2, 2, 1}, to_i8({1, 2, 3, 4}), {1, 2, 2, 1}) == to_i8({3, 3, 3, 3}));
  // 3x3 image 1..9, 2x2 window, stride 2, padding bottom/right 1:
  // (0,0) [1,2,4,5] 12/4 = 3; (0,1) [3,6] 4.5 -> 5; (1,0) [7,8] 7.5 -> 8; (1,1) [9] 9.
  const PoolParams q = rt::make_pool_params(2, 2, 2, 2, {0, 0, 1, 1});
  CHECK(avg(q, {1, 3, 3, 1}, to_i8({1, 2, 3, 4, 5, 6, 7, 8, 9}), {1, 2, 2, 1}) ==
        to_i8({3, 5, 8, 9}));
  // Global: one output per (image, channel).
  const Shape4 in{2, 2, 3, 2};
  const PoolParams g = rt::make_global_pool_params(in);
  CHECK(g.filter_h == 2);
  CHECK(g.filter_w == 3);
  std::vector<int8_t> x(24);
  for (int i = 0; i < 24; ++i) x[i] = static_cast<int8_t>(i * (i % 2 ? -1 : 1));
  // image 0 channel 0: 0+2+4+6+8+10 = 30 / 6 = 5; channel 1: -(1+3+5+7+9+11) = -36 / 6 = -6;
  // image 1 channel 0: 12+...+22 = 102 / 6 = 17; channel 1: -(13+...+23) = -108 / 6 = -18.
  CHECK(avg(g, in, x, {2, 1, 1, 2}) == to_i8({5, -6, 17, -18}));
  const PoolParams gc = rt::make_global_pool_params(in, -10, 10);
  CHECK(avg(gc, in, x, {2, 1, 1, 2}) == to_i8({5, -6, 10, -10}));
}

TEST_CASE("max_pool2d: padding never wins, clamp", "[runtime][pool]") {
  // All values negative: a padding value of 0 (or of the zero point) must not win.
  const PoolParams p = rt::make_pool_params(3, 3, 1, 1, {1, 1, 1, 1});
  CHECK(mx(p, {1, 2, 2, 1}, to_i8({-100, -50, -128, -120}), {1, 2, 2, 1}) ==
        to_i8({-50, -50, -50, -50}));
  const PoolParams q = rt::make_pool_params(2, 2, 2, 2, {}, -128, 40);
  CHECK(mx(q, {1, 2, 4, 2}, to_i8({1, 9, 2, 8, 100, 0, 3, -5, 4, 7, 6, 6, -1, -2, -3, -4}),
           {1, 1, 2, 2}) == to_i8({6, 9, 40, 0}));  // channel 0 of window 1: 100 -> 40
}

TEST_CASE("pooling: 300 random problems against the slow reference", "[runtime][pool]") {
  std::mt19937_64 rng(21);
  using rt_test::uniform;
  int tested = 0;
  while (tested < 300) {
    const Shape4 in{uniform(rng, 1, 2), uniform(rng, 1, 10), uniform(rng, 1, 10),
                    uniform(rng, 1, 5)};
    const int fh = uniform(rng, 1, 4), fw = uniform(rng, 1, 4);
    const rt::Padding pad{uniform(rng, 0, fh - 1), uniform(rng, 0, fw - 1), uniform(rng, 0, fh - 1),
                          uniform(rng, 0, fw - 1)};
    int lo = -128, hi = 127;
    if (uniform(rng, 0, 2) == 0) {
      lo = uniform(rng, -128, 0);
      hi = uniform(rng, 0, 127);
    }
    const PoolParams p =
        rt::make_pool_params(fh, fw, uniform(rng, 1, 3), uniform(rng, 1, 3), pad, lo, hi);
    if (fh > in.h + pad.top + pad.bottom || fw > in.w + pad.left + pad.right) continue;
    const int oh = rt_test::count_positions(in.h + pad.top + pad.bottom, fh, p.stride_h, 1);
    const int ow = rt_test::count_positions(in.w + pad.left + pad.right, fw, p.stride_w, 1);
    // Skip geometries where a window lies entirely in the bottom / right padding (rejected,
    // tested below).
    if ((oh - 1) * p.stride_h - pad.top >= in.h || (ow - 1) * p.stride_w - pad.left >= in.w) {
      continue;
    }
    const auto x = rt_test::random_int8(rng, static_cast<size_t>(rt::num_elements(in)));
    const Shape4 out{in.n, oh, ow, in.c};
    REQUIRE(avg(p, in, x, out) == rt_test::ref_pool(p, in, x, true));
    REQUIRE(mx(p, in, x, out) == rt_test::ref_pool(p, in, x, false));
    ++tested;
  }
}

TEST_CASE("pooling: bad arguments", "[runtime][pool][errors]") {
  CHECK_THROWS_WITH(rt::make_pool_params(0, 2, 1, 1),
                    Contains("edgeqat::runtime::make_pool_params: filter_h must be >= 1, got 0"));
  CHECK_THROWS_WITH(rt::make_pool_params(2, 2, 1, -1), Contains("stride_w must be >= 1, got -1"));
  CHECK_THROWS_WITH(rt::make_pool_params(2, 2, 1, 1, {-1, 0, 0, 0}),
                    Contains("padding must be >= 0, got top -1"));
  CHECK_THROWS_WITH(rt::make_pool_params(5000, 5000, 1, 1),
                    Contains("filter_h * filter_w must be <= 2^24"));
  CHECK_THROWS_WITH(rt::make_pool_params(2, 2, 1, 1, {}, 3, 2), Contains("got [3, 2]"));
  CHECK_THROWS_WITH(rt::make_global_pool_params({1, 0, 3, 1}),
                    Contains("input_shape.h and input_shape.w must be >= 1, got 0 x 3"));

  const std::vector<int8_t> x(16);
  // A window entirely in the top padding.
  const PoolParams top = rt::make_pool_params(2, 2, 1, 1, {2, 0, 0, 0});
  CHECK_THROWS_WITH(avg(top, {1, 4, 4, 1}, x, {1, 5, 3, 1}),
                    Contains("edgeqat::runtime::average_pool2d: padding.top (2) must be < "
                             "filter_h (2)"));
  // The last window entirely in the bottom padding (stride 3 lands on row 3 of a 3-row image).
  const PoolParams bottom = rt::make_pool_params(1, 1, 3, 1, {0, 0, 1, 0});
  CHECK_THROWS_WITH(mx(bottom, {1, 3, 4, 1}, x, {1, 2, 4, 1}),
                    Contains("edgeqat::runtime::max_pool2d: padding.bottom (1)") &&
                        Contains("leave the last window entirely in the padding"));
  const PoolParams ok = rt::make_pool_params(2, 2, 2, 2);
  CHECK_NOTHROW(avg(ok, {1, 4, 4, 1}, x, {1, 2, 2, 1}));
  CHECK_THROWS_WITH(avg(ok, {1, 4, 4, 1}, x, {1, 2, 2, 2}),
                    Contains("output_shape.c must be 1, got 2"));
  CHECK_THROWS_WITH(avg(ok, {1, 4, 4, 1}, x, {1, 3, 2, 1}),
                    Contains("output_shape.h must be 2, got 3"));
  CHECK_THROWS_WITH(avg(ok, {1, 1, 4, 1}, x, {1, 1, 2, 1}),
                    Contains("the dilated kernel along h ((2 - 1) * 1 + 1 = 2) is larger than "
                             "the padded input (1 + 0 + 0 = 1)"));
  std::vector<int8_t> y(4);
  CHECK_THROWS_WITH(rt::reference::max_pool2d(nullptr, ok, {1, 4, 4, 1}, nullptr, {1, 2, 2, 1},
                                              y.data()),
                    Contains("input must not be null (16 elements)"));
}

TEST_CASE("quantize: round half to even, saturation, NaN and infinities", "[runtime][quantize]") {
  const QuantizeParams p = rt::make_quantize_params(0.5, 0);
  const float inf = std::numeric_limits<float>::infinity();
  // x / 0.5: 0.5 -> 0, 1.5 -> 2, 2.5 -> 2, -0.5 -> 0, -1.5 -> -2, -2.5 -> -2, 0.4 -> 0.8 -> 1
  CHECK(quant(p, {0.25f, 0.75f, 1.25f, -0.25f, -0.75f, -1.25f, 0.4f}) ==
        to_i8({0, 2, 2, 0, -2, -2, 1}));
  CHECK(quant(p, {63.5f, 64.0f, 1e9f, -64.0f, -64.5f, -1e9f}) ==
        to_i8({127, 127, 127, -128, -128, -128}));
  CHECK(quant(p, {inf, -inf, std::nanf("")}) == to_i8({127, -128, 0}));
  const QuantizeParams z = rt::make_quantize_params(0.5, -100);
  CHECK(quant(z, {0.0f, 0.25f, 0.75f, -13.0f, -14.25f, 200.0f, std::nanf("")}) ==
        to_i8({-100, -100, -98, -126, -128, 127, -100}));
  // A float32 scale 0.1f: x / scale is one float32 division (then half to even).
  const QuantizeParams tenth = rt::make_quantize_params(0.1f, 0);
  CHECK(quant(tenth, {0.3f, 0.15f, 0.25f, 0.35f}) == to_i8({3, 2, 2, 4}));
}

TEST_CASE("quantize: random values against nearbyint (round half to even) in float32",
          "[runtime][quantize]") {
  REQUIRE(std::fegetround() == FE_TONEAREST);
  std::mt19937_64 rng(3);
  std::uniform_real_distribution<float> scale_log(-12.0f, 2.0f);
  for (int t = 0; t < 200; ++t) {
    const float scale = std::exp2(scale_log(rng));
    const int zp = rt_test::uniform(rng, -128, 127);
    const QuantizeParams p = rt::make_quantize_params(scale, zp);
    std::vector<float> x(1000);
    std::uniform_real_distribution<float> real(-200.0f * scale, 200.0f * scale);
    for (size_t i = 0; i < x.size(); ++i) {
      // A quarter of the values are exact ties (k + 0.5) * scale.
      x[i] = (i % 4 == 0) ? (static_cast<float>(rt_test::uniform(rng, -300, 300)) + 0.5f) * scale
                          : real(rng);
    }
    const auto y = quant(p, x);
    for (size_t i = 0; i < x.size(); ++i) {
      const float v = std::nearbyint(x[i] / scale) + static_cast<float>(zp);
      const int want = static_cast<int>(std::min(127.0f, std::max(-128.0f, v)));
      REQUIRE(int{y[i]} == want);
    }
  }
}

TEST_CASE("dequantize: (q - zp) * scale in float32, round trip", "[runtime][quantize]") {
  const QuantizeParams p = rt::make_quantize_params(0.5, 10);
  std::vector<int8_t> q;
  for (int i = -128; i <= 127; ++i) q.push_back(static_cast<int8_t>(i));
  std::vector<float> x(q.size());
  rt::reference::dequantize(nullptr, p, q.size(), q.data(), x.data());
  for (size_t i = 0; i < q.size(); ++i) REQUIRE(x[i] == static_cast<float>(q[i] - 10) * 0.5f);
  CHECK(x.front() == -69.0f);
  CHECK(x.back() == 58.5f);
  // Dequantize then quantize is the identity for every int8 value, for any scale.
  std::mt19937_64 rng(1);
  for (int t = 0; t < 100; ++t) {
    const QuantizeParams r =
        rt::make_quantize_params(std::exp2(std::uniform_real_distribution<double>(-20, 5)(rng)),
                                 rt_test::uniform(rng, -128, 127));
    rt::reference::dequantize(nullptr, r, q.size(), q.data(), x.data());
    REQUIRE(quant(r, x) == q);
  }
}

TEST_CASE("quantize / dequantize: bad arguments", "[runtime][quantize][errors]") {
  CHECK_THROWS_WITH(rt::make_quantize_params(0.0, 0),
                    Contains("edgeqat::runtime::make_quantize_params: scale must be finite and > "
                             "0, got 0"));
  CHECK_THROWS_WITH(rt::make_quantize_params(1e-60, 0),
                    Contains("scale must be finite and > 0 as a float32, got "));
  CHECK_THROWS_WITH(rt::make_quantize_params(1e60, 0), Contains("as a float32"));
  CHECK_THROWS_WITH(rt::make_quantize_params(1.0, 128),
                    Contains("zero_point must be in [-128, 127], got 128"));
  const std::vector<float> x(3);
  std::vector<int8_t> y(3);
  CHECK_THROWS_WITH(
      rt::reference::quantize(nullptr, QuantizeParams{-1.0f, 0}, 3, x.data(), y.data()),
                    Contains("edgeqat::runtime::quantize: scale must be finite and > 0, got -1"));
  std::vector<float> z(3);
  CHECK_THROWS_WITH(rt::reference::dequantize(nullptr, QuantizeParams{1.0f, -129}, 3, y.data(),
                                              z.data()),
                    Contains("edgeqat::runtime::dequantize: zero_point must be in [-128, 127]"));
  CHECK_THROWS_WITH(rt::reference::quantize(nullptr, QuantizeParams{}, 3, nullptr, y.data()),
                    Contains("input must not be null (3 elements)"));
}
