// Reference fully_connected and add: hand-computed cases, exhaustive int8 pairs for add,
// random problems against slow int64 loops with exact equality, add against real arithmetic
// (within 1 LSB of the output scale), clamps, and rejected arguments.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <random>
#include <stdexcept>
#include <vector>

#include "edgeqat/runtime/runtime.h"
#include "slow_reference.h"

namespace rt = edgeqat::runtime;
using rt::AddParams;
using rt::FullyConnectedParams;
using rt::FullyConnectedShape;
using rt::QuantizedMultiplier;
using Catch::Matchers::Contains;

namespace {

std::vector<int8_t> to_i8(std::initializer_list<int> v) { return {v.begin(), v.end()}; }

std::vector<int8_t> run_fc(const FullyConnectedParams& p, const std::vector<QuantizedMultiplier>& m,
                           const FullyConnectedShape& s, const std::vector<int8_t>& x,
                           const std::vector<int8_t>& w, const std::vector<int32_t>& bias) {
  std::vector<int8_t> y(static_cast<size_t>(s.batch) * s.out_features);
  rt::reference::fully_connected(nullptr, p, m.data(), s, x.data(), w.data(),
                                 bias.empty() ? nullptr : bias.data(), y.data());
  return y;
}

int8_t ref_add(const AddParams& p, int q1, int q2) {
  const int64_t a = int64_t{q1 - p.input1_zero_point} * (int64_t{1} << p.left_shift);
  const int64_t b = int64_t{q2 - p.input2_zero_point} * (int64_t{1} << p.left_shift);
  const int64_t sum = int64_t{rt_test::ref_requant(a, p.input1_multiplier)} +
                      rt_test::ref_requant(b, p.input2_multiplier);
  return rt_test::ref_output(sum, p.output_multiplier, p.output_zero_point, p.act_min, p.act_max);
}

int8_t run_add1(const AddParams& p, int q1, int q2) {
  const int8_t a = static_cast<int8_t>(q1), b = static_cast<int8_t>(q2);
  int8_t y = 0;
  rt::reference::add(nullptr, p, 1, &a, &b, &y);
  return y;
}

// Every (q1, q2) int8 pair in one call.
void all_pairs(std::vector<int8_t>& a, std::vector<int8_t>& b) {
  a.clear();
  b.clear();
  for (int i = -128; i <= 127; ++i)
    for (int j = -128; j <= 127; ++j) {
      a.push_back(static_cast<int8_t>(i));
      b.push_back(static_cast<int8_t>(j));
    }
}

}  // namespace

TEST_CASE("fully_connected: hand-computed", "[runtime][fc]") {
  // x = [1, 2, 3] with zero point 1 -> [0, 1, 2];
  // row 0 [1, 1, 1] -> 3, + bias 10 = 13, * 0.5 = 6.5 -> 7, + zp 3 = 10;
  // row 1 [-1, 2, -3] -> -4, + 0, * 0.5 = -2, + 3 = 1.
  FullyConnectedParams p;
  p.input_zero_point = 1;
  p.output_zero_point = 3;
  const std::vector<QuantizedMultiplier> m(2, rt::quantize_multiplier(0.5));
  const FullyConnectedShape s{1, 3, 2};
  CHECK(run_fc(p, m, s, to_i8({1, 2, 3}), to_i8({1, 1, 1, -1, 2, -3}), {10, 0}) ==
        to_i8({10, 1}));
  // No bias: 1.5 -> 2 (+3 = 5); -2 (+3 = 1). Clamp [2, 4]: 4, 2.
  CHECK(run_fc(p, m, s, to_i8({1, 2, 3}), to_i8({1, 1, 1, -1, 2, -3}), {}) == to_i8({5, 1}));
  p.act_min = 2;
  p.act_max = 4;
  CHECK(run_fc(p, m, s, to_i8({1, 2, 3}), to_i8({1, 1, 1, -1, 2, -3}), {}) == to_i8({4, 2}));
  // Batch of 2, per-channel multipliers 1 and 2.
  FullyConnectedParams q;
  const std::vector<QuantizedMultiplier> m2 = {rt::quantize_multiplier(1.0),
                                               rt::quantize_multiplier(2.0)};
  CHECK(run_fc(q, m2, {2, 2, 2}, to_i8({1, 2, -3, 4}), to_i8({1, 1, 2, -1}), {}) ==
        to_i8({3, 0, 1, -20}));
}

TEST_CASE("fully_connected: 300 random problems bit-exact against int64 loops", "[runtime][fc]") {
  std::mt19937_64 rng(11);
  using rt_test::uniform;
  for (int t = 0; t < 300; ++t) {
    const FullyConnectedShape s{uniform(rng, 0, 3), uniform(rng, 1, t % 10 == 0 ? 3000 : 200),
                                uniform(rng, 1, 24)};
    FullyConnectedParams p;
    p.input_zero_point = uniform(rng, -128, 127);
    p.output_zero_point = uniform(rng, -128, 127);
    if (uniform(rng, 0, 1)) p.act_min = p.output_zero_point;
    std::vector<QuantizedMultiplier> m;
    for (int o = 0; o < s.out_features; ++o) m.push_back(rt_test::random_multiplier(rng));
    const auto x = rt_test::random_int8(rng, static_cast<size_t>(s.batch) * s.in_features);
    const auto w = rt_test::random_int8(rng, static_cast<size_t>(s.out_features) * s.in_features,
                                        -127, 127);
    std::vector<int32_t> bias;
    if (uniform(rng, 0, 3)) {
      for (int o = 0; o < s.out_features; ++o) bias.push_back(uniform(rng, -(1 << 22), 1 << 22));
    }
    std::vector<int8_t> want;
    for (int b = 0; b < s.batch; ++b)
      for (int o = 0; o < s.out_features; ++o) {
        int64_t acc = bias.empty() ? 0 : bias[o];
        for (int i = 0; i < s.in_features; ++i)
          acc += int64_t{w[static_cast<size_t>(o) * s.in_features + i]} *
                 (x[static_cast<size_t>(b) * s.in_features + i] - p.input_zero_point);
        want.push_back(
            rt_test::ref_output(acc, m[o], p.output_zero_point, p.act_min, p.act_max));
      }
    INFO("case " << t << ": batch " << s.batch << " in " << s.in_features << " out "
                 << s.out_features);
    REQUIRE(run_fc(p, m, s, x, w, bias) == want);
  }
}

TEST_CASE("fully_connected: bad arguments", "[runtime][fc][errors]") {
  FullyConnectedParams p;
  const std::vector<QuantizedMultiplier> m(2, rt::quantize_multiplier(0.5));
  const std::vector<int8_t> x(3), w(6);
  std::vector<int8_t> y(2);
  auto fc = [&](const FullyConnectedParams& pp, const FullyConnectedShape& s) {
    rt::reference::fully_connected(nullptr, pp, m.data(), s, x.data(), w.data(), nullptr,
                                   y.data());
  };
  CHECK_NOTHROW(fc(p, {1, 3, 2}));
  CHECK_THROWS_WITH(fc(p, {-1, 3, 2}), Contains("edgeqat::runtime::fully_connected: "
                                                "shape.batch must be >= 0, got -1"));
  CHECK_THROWS_WITH(fc(p, {1, 0, 2}), Contains("shape.in_features must be >= 1, got 0"));
  CHECK_THROWS_WITH(fc(p, {1, 3, 0}), Contains("shape.out_features must be >= 1, got 0"));
  CHECK_THROWS_WITH(rt::check_fully_connected(p, {1, 65537, 2}),
                    Contains("shape.in_features must be <= 65536, got 65537"));
  FullyConnectedParams bad = p;
  bad.input_zero_point = 200;
  CHECK_THROWS_WITH(fc(bad, {1, 3, 2}),
                    Contains("input_zero_point must be in [-128, 127], got 200"));
  bad = p;
  bad.act_min = 10;
  bad.act_max = -10;
  CHECK_THROWS_AS(fc(bad, {1, 3, 2}), std::invalid_argument);
  CHECK_THROWS_WITH(rt::reference::fully_connected(nullptr, p, m.data(), {1, 3, 2}, x.data(),
                                                   nullptr, nullptr, y.data()),
                    Contains("filter must not be null (6 elements)"));
}

TEST_CASE("add: equal scales, zero points 0: the plain saturating sum, all int8 pairs",
          "[runtime][add]") {
  const AddParams p = rt::make_add_params(0.1, 0, 0.1, 0, 0.1, 0);
  CHECK(p.left_shift == 20);
  CHECK(p.input1_multiplier == QuantizedMultiplier{1 << 30, 0});  // exactly 0.5
  CHECK(p.input2_multiplier == QuantizedMultiplier{1 << 30, 0});
  CHECK(p.output_multiplier == QuantizedMultiplier{1 << 30, -18});  // exactly 2^-19
  std::vector<int8_t> a, b;
  all_pairs(a, b);
  std::vector<int8_t> y(a.size());
  rt::reference::add(nullptr, p, a.size(), a.data(), b.data(), y.data());
  for (size_t i = 0; i < a.size(); ++i) {
    const int want = std::min(127, std::max(-128, a[i] + b[i]));
    if (y[i] != want) FAIL(int{a[i]} << " + " << int{b[i]} << " = " << int{y[i]});
  }
}

TEST_CASE("add: scales 0.5 and 0.25 into 0.5: (2 q1 + q2) / 2 with ties toward +inf",
          "[runtime][add]") {
  const AddParams p = rt::make_add_params(0.5, 0, 0.25, 0, 0.5, 0);
  CHECK(run_add1(p, 1, 1) == 2);     // 1.5 -> 2
  CHECK(run_add1(p, -1, -1) == -1);  // -1.5 -> -1
  CHECK(run_add1(p, 0, 3) == 2);     // 1.5 -> 2
  CHECK(run_add1(p, 0, -3) == -1);   // -1.5 -> -1
  CHECK(run_add1(p, 10, -5) == 8);   // 7.5 -> 8
  std::vector<int8_t> a, b;
  all_pairs(a, b);
  std::vector<int8_t> y(a.size());
  rt::reference::add(nullptr, p, a.size(), a.data(), b.data(), y.data());
  for (size_t i = 0; i < a.size(); ++i) {
    const int t = 2 * a[i] + b[i];
    // t / 2 rounded with ties up, i.e. floor((t + 1) / 2): t even -> t / 2, t odd -> (t + 1) / 2
    // (exact, since t + 1 is even).
    const int floor_half = (t % 2 == 0) ? t / 2 : (t + 1) / 2;
    const int expect = std::min(127, std::max(-128, floor_half));
    if (y[i] != expect) FAIL(int{a[i]} << ", " << int{b[i]} << " -> " << int{y[i]});
  }
}

TEST_CASE("add: zero points, ReLU clamp, hand-computed", "[runtime][add]") {
  // s1 = s2 = s_out = 1; zp1 = 10, zp2 = -20, zp_out = 5.
  const AddParams p = rt::make_add_params(1.0, 10, 1.0, -20, 1.0, 5);
  CHECK(run_add1(p, 10, -20) == 5);    // 0 + 0
  CHECK(run_add1(p, 13, -16) == 12);   // 3 + 4 + 5
  CHECK(run_add1(p, 127, 127) == 127);  // saturates
  const AddParams relu = rt::make_add_params(1.0, 10, 1.0, -20, 1.0, 5, 5, 127);
  CHECK(run_add1(relu, 0, -20) == 5);  // -10 + 5 clamps at zp
  CHECK(run_add1(relu, 13, -16) == 12);
}

TEST_CASE("add: random parameters, bit-exact against the slow reference and within 1 LSB of "
          "real arithmetic",
          "[runtime][add]") {
  std::mt19937_64 rng(8);
  using rt_test::uniform;
  std::uniform_real_distribution<double> log_scale(-10.0, 0.0);
  int64_t compared = 0, exact_real = 0;
  for (int t = 0; t < 200; ++t) {
    const double s1 = std::exp2(log_scale(rng)), s2 = std::exp2(log_scale(rng));
    // Output scale in a sensible relation to the inputs (as an exporter would pick it).
    const double so =
        std::max(s1, s2) * std::exp2(std::uniform_real_distribution<double>(-1.0, 2.0)(rng));
    const int zp1 = uniform(rng, -128, 127), zp2 = uniform(rng, -128, 127),
              zpo = uniform(rng, -128, 127);
    const bool relu = uniform(rng, 0, 1);
    const AddParams p = rt::make_add_params(s1, zp1, s2, zp2, so, zpo, relu ? zpo : -128, 127);
    const auto a = rt_test::random_int8(rng, 2000), b = rt_test::random_int8(rng, 2000);
    std::vector<int8_t> y(a.size());
    rt::reference::add(nullptr, p, a.size(), a.data(), b.data(), y.data());
    for (size_t i = 0; i < a.size(); ++i) {
      REQUIRE(y[i] == ref_add(p, a[i], b[i]));
      // Real arithmetic: the sum of the two real values, requantized to the output grid.
      const double real = (a[i] - zp1) * s1 + (b[i] - zp2) * s2;
      const double q = std::round(real / so) + zpo;
      const double clamped = std::min(127.0, std::max(relu ? double(zpo) : -128.0, q));
      REQUIRE(std::fabs(y[i] - clamped) <= 1.0);
      exact_real += y[i] == clamped;
      ++compared;
    }
  }
  CHECK(exact_real > compared * 95 / 100);
}

TEST_CASE("add: bad arguments", "[runtime][add][errors]") {
  CHECK_THROWS_WITH(rt::make_add_params(0.0, 0, 1.0, 0, 1.0, 0),
                    Contains("edgeqat::runtime::make_add_params: input1_scale must be finite "
                             "and > 0, got 0"));
  CHECK_THROWS_WITH(rt::make_add_params(1.0, 0, std::nan(""), 0, 1.0, 0),
                    Contains("input2_scale must be finite and > 0, got nan"));
  CHECK_THROWS_WITH(rt::make_add_params(1.0, 0, 1.0, 0, -1.0, 0),
                    Contains("output_scale must be finite and > 0, got -1"));
  CHECK_THROWS_WITH(rt::make_add_params(1.0, 0, 1.0, 300, 1.0, 0),
                    Contains("input2_zero_point must be in [-128, 127], got 300"));
  CHECK_THROWS_WITH(rt::make_add_params(1.0, 0, 1.0, 0, 1.0, 0, 10, 9),
                    Contains("got [10, 9]"));
  // An output scale so small that the output multiplier exceeds 2^30.
  CHECK_THROWS_WITH(rt::make_add_params(1.0, 0, 1.0, 0, 1e-20, 0),
                    Contains("2 * max(input1_scale, input2_scale) / (2^20 * output_scale) = "));
  // A scale ratio beyond 2^32 makes the small input's multiplier {0, 0}: it adds nothing.
  const AddParams tiny = rt::make_add_params(1.0, 0, 1e-12, 0, 1.0, 0);
  CHECK(tiny.input2_multiplier == QuantizedMultiplier{0, 0});
  CHECK(run_add1(tiny, 7, 127) == 7);

  AddParams p = rt::make_add_params(1.0, 0, 1.0, 0, 1.0, 0);
  AddParams bad = p;
  bad.left_shift = 21;
  CHECK_THROWS_WITH(run_add1(bad, 0, 0),
                    Contains("edgeqat::runtime::add: left_shift must be in [0, 20], got 21"));
  bad = p;
  bad.input1_multiplier = {1 << 30, 1};
  CHECK_THROWS_WITH(run_add1(bad, 0, 0), Contains("input1_multiplier must be < 1 (shift <= 0)"));
  bad = p;
  bad.output_multiplier = {1 << 30, 40};
  CHECK_THROWS_WITH(run_add1(bad, 0, 0), Contains("output_multiplier must have multiplier >= 0 "
                                                  "and shift in [-31, 30], got {1073741824, 40}"));
  bad = p;
  bad.output_zero_point = -200;
  CHECK_THROWS_WITH(run_add1(bad, 0, 0), Contains("output_zero_point must be in [-128, 127]"));
  int8_t y = 0;
  CHECK_THROWS_WITH(rt::reference::add(nullptr, p, 1, nullptr, &y, &y),
                    Contains("input1 must not be null (1 elements)"));
  CHECK_NOTHROW(rt::reference::add(nullptr, p, 0, nullptr, nullptr, nullptr));
}
