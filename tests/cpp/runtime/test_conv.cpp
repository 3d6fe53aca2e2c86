// Reference conv2d / depthwise_conv2d: hand-computed cases (ties, padding as real 0, stride,
// dilation, groups, depth multiplier, per-channel multipliers, clamps), random problems against
// the slow reference of slow_reference.h with exact equality, consistency between the depthwise
// kernel and a grouped conv, and rejected arguments with their messages.
#include <catch2/catch.hpp>

#include <cstdint>
#include <limits>
#include <random>
#include <stdexcept>
#include <vector>

#include "edgeqat/runtime/runtime.h"
#include "slow_reference.h"

namespace rt = edgeqat::runtime;
using rt::ConvParams;
using rt::DepthwiseConvParams;
using rt::QuantizedMultiplier;
using rt::Shape4;
using rt_test::ConvProblem;
using Catch::Matchers::Contains;

namespace {

std::vector<int8_t> run_conv(const ConvProblem& c, const Shape4& out) {
  std::vector<int8_t> y(static_cast<size_t>(rt::num_elements(out)), 99);
  rt::reference::conv2d(nullptr, c.p, c.mult.data(), c.in, c.input.data(), c.filter,
                        c.weights.data(), c.bias.empty() ? nullptr : c.bias.data(), out, y.data());
  return y;
}

std::vector<int8_t> to_i8(std::initializer_list<int> v) { return {v.begin(), v.end()}; }

ConvProblem simple_problem(Shape4 in, std::vector<int8_t> input, Shape4 filter,
                           std::vector<int8_t> weights, double multiplier) {
  ConvProblem c;
  c.in = in;
  c.filter = filter;
  c.input = std::move(input);
  c.weights = std::move(weights);
  c.mult.assign(filter.n, rt::quantize_multiplier(multiplier));
  return c;
}

// A random valid conv problem (groups, stride, dilation, asymmetric padding, clamps ...).
ConvProblem random_conv(std::mt19937_64& rng) {
  using rt_test::uniform;
  ConvProblem c;
  for (;;) {
    const int groups = uniform(rng, 0, 2) == 0 ? uniform(rng, 2, 4) : 1;
    const int cin_g = uniform(rng, 1, 5), cout_g = uniform(rng, 1, 5);
    c.in = {uniform(rng, 1, 2), uniform(rng, 1, 9), uniform(rng, 1, 9), groups * cin_g};
    c.filter = {groups * cout_g, uniform(rng, 1, 4), uniform(rng, 1, 4), cin_g};
    c.p = ConvParams{};
    c.p.groups = groups;
    c.p.stride_h = uniform(rng, 1, 3);
    c.p.stride_w = uniform(rng, 1, 3);
    c.p.dilation_h = uniform(rng, 0, 2) ? 1 : uniform(rng, 2, 3);
    c.p.dilation_w = uniform(rng, 0, 2) ? 1 : uniform(rng, 2, 3);
    c.p.padding = {uniform(rng, 0, 3), uniform(rng, 0, 3), uniform(rng, 0, 3), uniform(rng, 0, 3)};
    const int eh = (c.filter.h - 1) * c.p.dilation_h + 1;
    const int ew = (c.filter.w - 1) * c.p.dilation_w + 1;
    if (eh <= c.in.h + c.p.padding.top + c.p.padding.bottom &&
        ew <= c.in.w + c.p.padding.left + c.p.padding.right) {
      break;
    }
  }
  c.p.input_zero_point = uniform(rng, -128, 127);
  c.p.output_zero_point = uniform(rng, -128, 127);
  switch (uniform(rng, 0, 2)) {
    case 0:
      break;
    case 1:  // ReLU
      c.p.act_min = c.p.output_zero_point;
      break;
    default: {
      const int a = uniform(rng, -128, 127), b = uniform(rng, -128, 127);
      c.p.act_min = std::min(a, b);
      c.p.act_max = std::max(a, b);
    }
  }
  c.input = rt_test::random_int8(rng, static_cast<size_t>(rt::num_elements(c.in)));
  c.weights = rt_test::random_int8(rng, static_cast<size_t>(rt::num_elements(c.filter)),
                                   uniform(rng, 0, 9) ? -127 : -128, 127);
  const int bias_kind = uniform(rng, 0, 5);
  if (bias_kind > 0) {
    c.bias.resize(c.filter.n);
    for (auto& b : c.bias) {
      // Kind 5: near the int32 limits, so that acc + bias saturates.
      const int32_t near_max = std::numeric_limits<int32_t>::max() - uniform(rng, 0, 1000);
      const int32_t near_min = std::numeric_limits<int32_t>::min() + uniform(rng, 0, 1000);
      b = bias_kind == 5 ? (uniform(rng, 0, 1) ? near_max : near_min)
                         : uniform(rng, -(1 << 20), 1 << 20);
    }
  }
  for (int i = 0; i < c.filter.n; ++i) c.mult.push_back(rt_test::random_multiplier(rng));
  return c;
}

}  // namespace

TEST_CASE("conv2d: hand-computed 3x3 input, 2x2 filter, ties toward +inf",
          "[runtime][conv]") {
  // input 1..9, all-ones 2x2 filter: window sums 12 16 / 24 28.
  ConvProblem c = simple_problem({1, 3, 3, 1}, to_i8({1, 2, 3, 4, 5, 6, 7, 8, 9}), {1, 2, 2, 1},
                                 to_i8({1, 1, 1, 1}), 1.0);
  CHECK(run_conv(c, {1, 2, 2, 1}) == to_i8({12, 16, 24, 28}));
  c.mult[0] = rt::quantize_multiplier(0.25);  // 3, 4, 6, 7 exactly
  CHECK(run_conv(c, {1, 2, 2, 1}) == to_i8({3, 4, 6, 7}));
  c.bias = {2};  // 14/4 = 3.5, 18/4 = 4.5, 26/4 = 6.5, 30/4 = 7.5: every one a tie, all up
  CHECK(run_conv(c, {1, 2, 2, 1}) == to_i8({4, 5, 7, 8}));
  c.bias = {-58};  // -46/4 = -11.5, -42/4 = -10.5, -34/4 = -8.5, -30/4 = -7.5: ties up too
  CHECK(run_conv(c, {1, 2, 2, 1}) == to_i8({-11, -10, -8, -7}));
  c.p.output_zero_point = 10;
  c.p.act_min = 0;  // a ReLU clamp at the zero point... and a cap at 2
  c.p.act_max = 2;
  CHECK(run_conv(c, {1, 2, 2, 1}) == to_i8({0, 0, 2, 2}));
  // bias pointer null == zero bias
  c.bias.clear();
  c.p = ConvParams{};
  CHECK(run_conv(c, {1, 2, 2, 1}) == to_i8({3, 4, 6, 7}));
}

TEST_CASE("conv2d: padding taps are real 0 (the input zero point), not q = 0",
          "[runtime][conv]") {
  // input [[10, 20], [30, 40]] with zero point 10: real values 0, 10, 20, 30.
  // 3x3 all-ones filter, padding 1: every window covers all four pixels -> 60.
  ConvProblem c = simple_problem({1, 2, 2, 1}, to_i8({10, 20, 30, 40}), {1, 3, 3, 1},
                                 std::vector<int8_t>(9, 1), 0.5);
  c.p.input_zero_point = 10;
  c.p.padding = {1, 1, 1, 1};
  c.p.output_zero_point = -5;
  CHECK(run_conv(c, {1, 2, 2, 1}) == to_i8({25, 25, 25, 25}));  // 60 * 0.5 - 5
  c.p.act_max = 20;  // ReLU6-style cap
  CHECK(run_conv(c, {1, 2, 2, 1}) == to_i8({20, 20, 20, 20}));
  // Asymmetric padding (bottom / right only, "SAME" with an even kernel): 2x2 filter.
  ConvProblem d = simple_problem({1, 2, 2, 1}, to_i8({10, 20, 30, 40}), {1, 2, 2, 1},
                                 to_i8({1, 2, 3, 4}), 1.0);
  d.p.input_zero_point = 10;
  d.p.padding = {0, 0, 1, 1};
  // real [[0, 10], [20, 30]]: (0,0) 0 + 20 + 60 + 120 = 200, clamped to 127;
  // (0,1) 10*1 + 30*3 = 100; (1,0) 20*1 + 30*2 = 80; (1,1) 30*1 = 30.
  CHECK(run_conv(d, {1, 2, 2, 1}) == to_i8({127, 100, 80, 30}));
}

TEST_CASE("conv2d: stride and dilation", "[runtime][conv]") {
  std::vector<int8_t> in(25);
  for (int i = 0; i < 25; ++i) in[i] = static_cast<int8_t>(i);
  // 2x2 ones, dilation 2 (taps 2 apart), stride 2: output 2x2.
  ConvProblem c = simple_problem({1, 5, 5, 1}, in, {1, 2, 2, 1}, to_i8({1, 1, 1, 1}), 1.0);
  c.p.stride_h = c.p.stride_w = 2;
  c.p.dilation_h = c.p.dilation_w = 2;
  CHECK(run_conv(c, {1, 2, 2, 1}) == to_i8({0 + 2 + 10 + 12, 2 + 4 + 12 + 14, 10 + 12 + 20 + 22,
                                            12 + 14 + 22 + 24}));
  // Different strides per axis: stride_h 1, stride_w 3, no dilation, 1x1 filter picks columns.
  ConvProblem d = simple_problem({1, 5, 5, 1}, in, {1, 1, 1, 1}, to_i8({1}), 1.0);
  d.p.stride_w = 3;
  CHECK(run_conv(d, {1, 5, 2, 1}) == to_i8({0, 3, 5, 8, 10, 13, 15, 18, 20, 23}));
}

TEST_CASE("conv2d: groups and per-channel multipliers", "[runtime][conv]") {
  // One pixel, 4 input channels [1, 2, 3, 4], 2 groups, 2 output channels.
  // oc 0 (group 0): w [1, 1] . [1, 2] = 3, times 2 -> 6.
  // oc 1 (group 1): w [1, -1] . [3, 4] = -1, times 3 -> -3.
  ConvProblem c = simple_problem({1, 1, 1, 4}, to_i8({1, 2, 3, 4}), {2, 1, 1, 2},
                                 to_i8({1, 1, 1, -1}), 1.0);
  c.p.groups = 2;
  c.mult = {rt::quantize_multiplier(2.0), rt::quantize_multiplier(3.0)};
  CHECK(run_conv(c, {1, 1, 1, 2}) == to_i8({6, -3}));
  // Same without groups: the filter sees all four channels.
  ConvProblem d = simple_problem({1, 1, 1, 4}, to_i8({1, 2, 3, 4}), {2, 1, 1, 4},
                                 to_i8({1, 1, 0, 0, 0, 0, 1, -1}), 1.0);
  d.mult = c.mult;
  CHECK(run_conv(d, {1, 1, 1, 2}) == to_i8({6, -3}));
  // Batch of two: the second image is independent.
  ConvProblem e = c;
  e.in.n = 2;
  e.input = to_i8({1, 2, 3, 4, -1, -2, -3, -4});
  CHECK(run_conv(e, {2, 1, 1, 2}) == to_i8({6, -3, -6, 3}));
}

TEST_CASE("depthwise_conv2d: hand-computed depth multiplier 2", "[runtime][conv]") {
  // 1x2 image, 2 channels: pixel 0 = [1, 2], pixel 1 = [3, 4]. 1x2 kernel, multiplier 2.
  // Output channel oc reads input channel oc / 2. filter [1, 1, 2, 4]:
  //   tap 0: [1, 2, 3, 4], tap 1: [5, 6, 7, 8]
  // oc0 = 1*1 + 5*3 = 16, oc1 = 2*1 + 6*3 = 20, oc2 = 3*2 + 7*4 = 34, oc3 = 4*2 + 8*4 = 40.
  DepthwiseConvParams p;
  p.depth_multiplier = 2;
  const std::vector<int8_t> in = to_i8({1, 2, 3, 4}), w = to_i8({1, 2, 3, 4, 5, 6, 7, 8});
  std::vector<QuantizedMultiplier> m(4, rt::quantize_multiplier(1.0));
  std::vector<int8_t> out(4);
  rt::reference::depthwise_conv2d(nullptr, p, m.data(), {1, 1, 2, 2}, in.data(), {1, 1, 2, 4},
                                  w.data(), nullptr, {1, 1, 1, 4}, out.data());
  CHECK(out == to_i8({16, 20, 34, 40}));
  // Per-channel multipliers and bias, input zero point 1 (real [0, 1], [2, 3]):
  // oc0 = 1*0 + 5*2 = 10, oc1 = 2*0 + 6*2 = 12, oc2 = 3*1 + 7*3 = 24, oc3 = 4*1 + 8*3 = 28.
  p.input_zero_point = 1;
  m = {rt::quantize_multiplier(0.5), rt::quantize_multiplier(0.25), rt::quantize_multiplier(1.0),
       rt::quantize_multiplier(0.125)};
  const std::vector<int32_t> bias = {1, 1, -100, 0};
  rt::reference::depthwise_conv2d(nullptr, p, m.data(), {1, 1, 2, 2}, in.data(), {1, 1, 2, 4},
                                  w.data(), bias.data(), {1, 1, 1, 4}, out.data());
  CHECK(out == to_i8({6, 3, -76, 4}));  // 5.5 -> 6, 3.25 -> 3, -76, 3.5 -> 4
}

TEST_CASE("conv2d: 400 random problems bit-exact against the slow reference",
          "[runtime][conv]") {
  std::mt19937_64 rng(31337);
  int64_t outputs = 0;
  for (int t = 0; t < 400; ++t) {
    const ConvProblem c = random_conv(rng);
    const Shape4 out = rt_test::ref_conv_output_shape(c);
    const std::vector<int8_t> want = rt_test::ref_conv(c);
    INFO("case " << t << ": in [" << c.in.n << "," << c.in.h << "," << c.in.w << "," << c.in.c
                 << "] filter [" << c.filter.n << "," << c.filter.h << "," << c.filter.w << ","
                 << c.filter.c << "] groups " << c.p.groups << " stride " << c.p.stride_h << ","
                 << c.p.stride_w << " dilation " << c.p.dilation_h << "," << c.p.dilation_w
                 << " pad " << c.p.padding.top << "," << c.p.padding.left << ","
                 << c.p.padding.bottom << "," << c.p.padding.right);
    REQUIRE(rt::window_output_size(c.in.h, c.filter.h, c.p.stride_h, c.p.dilation_h,
                                   c.p.padding.top, c.p.padding.bottom, "t", "h") == out.h);
    REQUIRE(run_conv(c, out) == want);
    outputs += static_cast<int64_t>(want.size());
  }
  CHECK(outputs > 10000);
}

TEST_CASE("conv2d: padding equals an explicitly zero-point-padded input", "[runtime][conv]") {
  std::mt19937_64 rng(4);
  for (int t = 0; t < 100; ++t) {
    ConvProblem c = random_conv(rng);
    const Shape4 out = rt_test::ref_conv_output_shape(c);
    // The same input padded by hand with its zero point, then a conv without padding.
    ConvProblem d = c;
    const auto& pd = c.p.padding;
    d.in.h = c.in.h + pd.top + pd.bottom;
    d.in.w = c.in.w + pd.left + pd.right;
    d.input.assign(static_cast<size_t>(rt::num_elements(d.in)),
                   static_cast<int8_t>(c.p.input_zero_point));
    auto pixel = [](const Shape4& s, int b, int y, int x) {  // offset of pixel (b, y, x)
      return ((static_cast<size_t>(b) * s.h + y) * s.w + x) * s.c;
    };
    for (int b = 0; b < c.in.n; ++b)
      for (int y = 0; y < c.in.h; ++y)
        for (int x = 0; x < c.in.w; ++x)
          for (int ch = 0; ch < c.in.c; ++ch)
            d.input[pixel(d.in, b, y + pd.top, x + pd.left) + ch] =
                c.input[pixel(c.in, b, y, x) + ch];
    d.p.padding = {};
    REQUIRE(run_conv(c, out) == run_conv(d, out));
  }
}

TEST_CASE("depthwise_conv2d: random problems against the slow reference and grouped conv2d",
          "[runtime][conv]") {
  std::mt19937_64 rng(777);
  using rt_test::uniform;
  for (int t = 0; t < 300; ++t) {
    // Draw a grouped conv with one input channel per group, then express it as depthwise.
    ConvProblem c = random_conv(rng);
    const int channels = uniform(rng, 1, 6), mult = uniform(rng, 1, 3);
    c.in.c = channels;
    c.filter = {channels * mult, c.filter.h, c.filter.w, 1};
    c.p.groups = channels;
    c.input = rt_test::random_int8(rng, static_cast<size_t>(rt::num_elements(c.in)));
    c.weights = rt_test::random_int8(rng, static_cast<size_t>(rt::num_elements(c.filter)));
    if (!c.bias.empty()) c.bias.resize(c.filter.n, 12345);
    c.mult.clear();
    for (int i = 0; i < c.filter.n; ++i) c.mult.push_back(rt_test::random_multiplier(rng));
    const Shape4 out = rt_test::ref_conv_output_shape(c);

    DepthwiseConvParams p;
    p.stride_h = c.p.stride_h;
    p.stride_w = c.p.stride_w;
    p.dilation_h = c.p.dilation_h;
    p.dilation_w = c.p.dilation_w;
    p.padding = c.p.padding;
    p.depth_multiplier = mult;
    p.input_zero_point = c.p.input_zero_point;
    p.output_zero_point = c.p.output_zero_point;
    p.act_min = c.p.act_min;
    p.act_max = c.p.act_max;
    // OHWI [C*M, kh, kw, 1] -> 1HWO [1, kh, kw, C*M]
    const Shape4 fdw{1, c.filter.h, c.filter.w, c.filter.n};
    std::vector<int8_t> wdw(c.weights.size());
    for (int oc = 0; oc < c.filter.n; ++oc)
      for (int ky = 0; ky < c.filter.h; ++ky)
        for (int kx = 0; kx < c.filter.w; ++kx)
          wdw[(static_cast<size_t>(ky) * c.filter.w + kx) * c.filter.n + oc] =
              c.weights[(static_cast<size_t>(oc) * c.filter.h + ky) * c.filter.w + kx];
    std::vector<int8_t> got(static_cast<size_t>(rt::num_elements(out)));
    rt::reference::depthwise_conv2d(nullptr, p, c.mult.data(), c.in, c.input.data(), fdw,
                                    wdw.data(), c.bias.empty() ? nullptr : c.bias.data(), out,
                                    got.data());
    REQUIRE(got == rt_test::ref_conv(c));
    REQUIRE(got == run_conv(c, out));
  }
}

TEST_CASE("conv2d / depthwise_conv2d: bad arguments are rejected with clear messages",
          "[runtime][conv][errors]") {
  const ConvProblem base = simple_problem({1, 3, 3, 2}, std::vector<int8_t>(18, 0), {4, 2, 2, 2},
                                          std::vector<int8_t>(32, 1), 0.5);
  const Shape4 out{1, 2, 2, 4};
  REQUIRE_NOTHROW(run_conv(base, out));
  auto with = [&](auto edit) {
    ConvProblem c = base;
    edit(c);
    return c;
  };
  auto throws = [&](const ConvProblem& c, const Shape4& o, const std::string& text) {
    CHECK_THROWS_AS(run_conv(c, o), std::invalid_argument);
    CHECK_THROWS_WITH(run_conv(c, o), Contains("edgeqat::runtime::conv2d: ") && Contains(text));
  };
  throws(with([](ConvProblem& c) { c.p.stride_h = 0; }), out, "stride_h must be >= 1, got 0");
  throws(with([](ConvProblem& c) { c.p.dilation_w = -1; }), out, "dilation_w must be >= 1, got -1");
  throws(with([](ConvProblem& c) { c.p.padding.left = -2; }), out, "padding must be >= 0");
  throws(with([](ConvProblem& c) { c.p.groups = 0; }), out, "groups must be >= 1, got 0");
  throws(with([](ConvProblem& c) { c.p.groups = 3; }), out,
         "groups (3) must divide input_shape.c (2)");
  throws(with([](ConvProblem& c) { c.filter.c = 1; }), out,
         "filter_shape.c (input channels per group) must be 2, got 1");
  throws(base, {1, 3, 2, 4}, "output_shape.h must be 2, got 3");
  throws(base, {1, 2, 2, 5}, "output_shape.c (filter_shape.n) must be 4, got 5");
  throws(base, {2, 2, 2, 4}, "output_shape.n must be 1, got 2");
  throws(with([](ConvProblem& c) { c.p.input_zero_point = 128; }), out,
         "input_zero_point must be in [-128, 127], got 128");
  throws(with([](ConvProblem& c) { c.p.output_zero_point = -129; }), out,
         "output_zero_point must be in [-128, 127], got -129");
  throws(with([](ConvProblem& c) { c.p.act_min = 5, c.p.act_max = 4; }), out,
         "act_min <= act_max <= 127, got [5, 4]");
  throws(with([](ConvProblem& c) { c.p.act_max = 300; }), out, "got [-128, 300]");
  throws(with([](ConvProblem& c) { c.p.dilation_h = 4; }), out,
         "the dilated kernel along h ((2 - 1) * 4 + 1 = 5) is larger than the padded input");
  throws(with([](ConvProblem& c) { c.mult[2] = {1 << 30, 31}; }), out,
         "multipliers[2] must have multiplier >= 0 and shift in [-31, 30], got {1073741824, 31}");
  throws(with([](ConvProblem& c) { c.mult[3] = {-5, 0}; }), out, "multipliers[3]");
  throws(with([](ConvProblem& c) { c.in.h = 0; }), out, "input_shape must have n >= 0 and all");
  // Null pointers.
  std::vector<int8_t> y(16);
  CHECK_THROWS_WITH(rt::reference::conv2d(nullptr, base.p, base.mult.data(), base.in, nullptr,
                                          base.filter, base.weights.data(), nullptr, out, y.data()),
                    Contains("input must not be null (18 elements)"));
  CHECK_THROWS_WITH(rt::reference::conv2d(nullptr, base.p, nullptr, base.in, base.input.data(),
                                          base.filter, base.weights.data(), nullptr, out, y.data()),
                    Contains("multipliers must not be null"));
  // Accumulation depth beyond 65536 (checked from the shapes alone: no data needed).
  const Shape4 big_in{1, 1, 1, 65537}, big_filter{1, 1, 1, 65537};
  CHECK_THROWS_WITH(rt::check_conv2d(ConvParams{}, big_in, big_filter, {1, 1, 1, 1}),
                    Contains("kernel_h * kernel_w * in_channels_per_group must be <= 65536"));
  CHECK_NOTHROW(rt::check_conv2d(ConvParams{}, {1, 1, 1, 65536}, {1, 1, 1, 65536}, {1, 1, 1, 1}));
  // Empty batch: valid, nothing written.
  ConvProblem empty = base;
  empty.in.n = 0;
  empty.input.clear();
  CHECK_NOTHROW(rt::reference::conv2d(nullptr, empty.p, empty.mult.data(), empty.in, nullptr,
                                      empty.filter, empty.weights.data(), nullptr, {0, 2, 2, 4},
                                      nullptr));

  // Depthwise.
  DepthwiseConvParams p;
  p.depth_multiplier = 2;
  std::vector<QuantizedMultiplier> m(4, rt::quantize_multiplier(1.0));
  std::vector<int8_t> in(4), w(8), o(4);
  auto dw = [&](const DepthwiseConvParams& pp, Shape4 fs, Shape4 os) {
    rt::reference::depthwise_conv2d(nullptr, pp, m.data(), {1, 1, 2, 2}, in.data(), fs, w.data(),
                                    nullptr, os, o.data());
  };
  CHECK_NOTHROW(dw(p, {1, 1, 2, 4}, {1, 1, 1, 4}));
  CHECK_THROWS_WITH(dw(p, {1, 1, 2, 3}, {1, 1, 1, 4}),
                    Contains("edgeqat::runtime::depthwise_conv2d: filter_shape.c must be "
                             "input_shape.c * depth_multiplier = 2 * 2 = 4, got 3"));
  CHECK_THROWS_WITH(dw(p, {2, 1, 2, 4}, {1, 1, 1, 4}), Contains("filter_shape.n must be 1, got 2"));
  DepthwiseConvParams bad = p;
  bad.depth_multiplier = 0;
  CHECK_THROWS_WITH(dw(bad, {1, 1, 2, 4}, {1, 1, 1, 4}),
                    Contains("depth_multiplier must be >= 1, got 0"));
  bad = p;
  bad.stride_w = 0;
  CHECK_THROWS_WITH(dw(bad, {1, 1, 2, 4}, {1, 1, 1, 4}), Contains("stride_w must be >= 1, got 0"));
  CHECK_THROWS_WITH(dw(p, {1, 1, 2, 4}, {1, 1, 2, 4}), Contains("output_shape.w must be 1, got 2"));
}
