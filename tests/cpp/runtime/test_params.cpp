// Load-time helpers: activation ranges, per-channel multipliers, make_*_params errors, and an
// end-to-end check that a conv built with make_conv_params from float scales computes the real
// conv of the dequantized tensors within 1 LSB of the output scale.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <random>
#include <stdexcept>
#include <vector>

#include "edgeqat/runtime/runtime.h"
#include "slow_reference.h"

namespace rt = edgeqat::runtime;
using rt::Activation;
using rt::QuantizedMultiplier;
using rt::Shape4;
using Catch::Matchers::Contains;

TEST_CASE("activation_range: ReLU and ReLU6 become clamps", "[runtime][params]") {
  auto r = rt::activation_range(Activation::kNone, 0.1, 3);
  CHECK((r.min == -128 && r.max == 127));
  r = rt::activation_range(Activation::kRelu, 0.1, 3);
  CHECK((r.min == 3 && r.max == 127));
  r = rt::activation_range(Activation::kRelu6, 0.05, -10);  // 6 / 0.05 = 120
  CHECK((r.min == -10 && r.max == 110));
  r = rt::activation_range(Activation::kRelu6, 6.0 / 255.0, -128);  // the whole int8 range
  CHECK((r.min == -128 && r.max == 127));
  r = rt::activation_range(Activation::kRelu6, 0.1, 100);  // 100 + 60 saturates
  CHECK((r.min == 100 && r.max == 127));
  r = rt::activation_range(Activation::kRelu6, 0.08, 0);  // 6 / 0.08, rounded like TFLite
  CHECK(r.max == static_cast<int32_t>(std::round(6.0 / 0.08)));
  CHECK_THROWS_WITH(rt::activation_range(Activation::kRelu, 0.0, 0),
                    Contains("edgeqat::runtime::activation_range: output_scale must be finite and "
                             "> 0, got 0"));
  CHECK_THROWS_WITH(rt::activation_range(Activation::kRelu, 1.0, 128),
                    Contains("output_zero_point must be in [-128, 127], got 128"));
  CHECK_THROWS_WITH(rt::activation_range(static_cast<Activation>(7), 1.0, 0),
                    Contains("unknown activation 7"));
}

TEST_CASE("make_conv_params: per-channel multipliers in double, zero points, clamp",
          "[runtime][params]") {
  const auto act = rt::activation_range(Activation::kRelu, 0.5, -3);
  const rt::ConvSetup s = rt::make_conv_params(0.02, 5, {0.01, 0.5, 0.003}, 0.5, -3, act);
  CHECK(s.params.input_zero_point == 5);
  CHECK(s.params.output_zero_point == -3);
  CHECK(s.params.act_min == -3);
  CHECK(s.params.act_max == 127);
  CHECK(s.params.groups == 1);
  CHECK(s.params.stride_h == 1);
  REQUIRE(s.multipliers.size() == 3);
  CHECK(s.multipliers[0] == rt::quantize_multiplier(0.02 * 0.01 / 0.5));
  CHECK(s.multipliers[1] == rt::quantize_multiplier(0.02 * 0.5 / 0.5));
  CHECK(s.multipliers[2] == rt::quantize_multiplier(0.02 * 0.003 / 0.5));
  CHECK(rt::make_channel_multipliers(0.02, {0.01, 0.5, 0.003}, 0.5) == s.multipliers);
  const auto dw = rt::make_depthwise_conv_params(0.02, 5, {0.01, 0.5, 0.003}, 0.5, -3, act);
  CHECK(dw.multipliers == s.multipliers);
  CHECK(dw.params.depth_multiplier == 1);
  const auto fc = rt::make_fully_connected_params(0.02, 5, {0.01, 0.5, 0.003}, 0.5, -3, act);
  CHECK(fc.multipliers == s.multipliers);
  CHECK(fc.params.act_min == -3);
}

TEST_CASE("make_conv_params: bad scales and zero points name the argument",
          "[runtime][params][errors]") {
  CHECK_THROWS_WITH(rt::make_conv_params(0.0, 0, {0.1}, 1.0, 0),
                    Contains("edgeqat::runtime::make_conv_params: input_scale must be finite and "
                             "> 0, got 0"));
  CHECK_THROWS_WITH(rt::make_conv_params(1.0, 0, {0.1}, INFINITY, 0),
                    Contains("output_scale must be finite and > 0, got inf"));
  CHECK_THROWS_WITH(rt::make_conv_params(1.0, 0, {0.1, 0.2, -1.0}, 1.0, 0),
                    Contains("weight_scales[2] must be finite and > 0, got -1"));
  CHECK_THROWS_WITH(rt::make_conv_params(1.0, 0, {}, 1.0, 0),
                    Contains("weight_scales must not be empty"));
  CHECK_THROWS_WITH(rt::make_conv_params(1.0, -129, {0.1}, 1.0, 0),
                    Contains("input_zero_point must be in [-128, 127], got -129"));
  CHECK_THROWS_WITH(rt::make_conv_params(1.0, 0, {0.1}, 1.0, 0, {10, 0}), Contains("got [10, 0]"));
  CHECK_THROWS_WITH(
      rt::make_depthwise_conv_params(1.0, 0, {0.1, 1e12}, 1e-3, 0),
      Contains("edgeqat::runtime::make_depthwise_conv_params: input_scale * weight_scales[1] / "
               "output_scale (output channel 1) = ") &&
          Contains("is not a usable multiplier: it must be finite, > 0 and < 2^30"));
  CHECK_THROWS_WITH(rt::make_fully_connected_params(1.0, 0, {0.1}, 1.0, 300),
                    Contains("edgeqat::runtime::make_fully_connected_params: output_zero_point"));
  // Overflow of the product to infinity is caught as well.
  CHECK_THROWS_WITH(rt::make_channel_multipliers(1e300, {1e300}, 1e-300),
                    Contains("(output channel 0) = inf is not a usable multiplier"));
  // A multiplier below 2^-32 is representable only as {0, 0}: accepted (the channel outputs
  // its zero point).
  CHECK(rt::make_channel_multipliers(1e-6, {1e-6}, 1e3)[0] == QuantizedMultiplier{0, 0});
}

TEST_CASE("make_conv_params end to end: the int8 conv is within 1 LSB of the real conv",
          "[runtime][params]") {
  // Float weights and activations, quantized as an exporter would: weights symmetric per output
  // channel to [-127, 127], bias to int32 at s_in * s_w[c]. The int8 conv must be within one
  // output step of the real conv of the dequantized values, requantized to the output grid.
  std::mt19937_64 rng(6);
  std::uniform_real_distribution<double> u(-1.0, 1.0);
  int64_t total = 0, exact = 0;
  for (int t = 0; t < 50; ++t) {
    const Shape4 in{1, 6, 5, 3}, filter{4, 3, 3, 3}, out{1, 3, 3, 4};
    const double s_in = 0.02 + 0.01 * std::fabs(u(rng)), s_out = 0.05 + 0.05 * std::fabs(u(rng));
    const int zp_in = rt_test::uniform(rng, -20, 20), zp_out = rt_test::uniform(rng, -20, 20);
    std::vector<double> w_scales(filter.n);
    std::vector<int8_t> wq(static_cast<size_t>(rt::num_elements(filter)));
    std::vector<int32_t> bias(filter.n);
    const size_t per_oc = static_cast<size_t>(filter.h) * filter.w * filter.c;
    for (int oc = 0; oc < filter.n; ++oc) {
      std::vector<double> wf(per_oc);
      double amax = 0;
      for (auto& v : wf) amax = std::max(amax, std::fabs(v = u(rng) * 0.3));
      w_scales[oc] = amax / 127.0;
      for (size_t i = 0; i < per_oc; ++i)
        wq[oc * per_oc + i] = static_cast<int8_t>(std::lround(wf[i] / w_scales[oc]));
      bias[oc] = static_cast<int32_t>(std::lround(u(rng) * 0.2 / (s_in * w_scales[oc])));
    }
    const auto x = rt_test::random_int8(rng, static_cast<size_t>(rt::num_elements(in)));
    rt::ConvSetup s = rt::make_conv_params(s_in, zp_in, w_scales, s_out, zp_out);
    s.params.stride_h = s.params.stride_w = 2;
    s.params.padding = {1, 1, 1, 1};
    std::vector<int8_t> y(static_cast<size_t>(rt::num_elements(out)));
    rt::reference::conv2d(nullptr, s.params, s.multipliers.data(), in, x.data(), filter,
                          wq.data(), bias.data(), out, y.data());
    for (int oy = 0; oy < out.h; ++oy)
      for (int ox = 0; ox < out.w; ++ox)
        for (int oc = 0; oc < out.c; ++oc) {
          double real = bias[oc] * s_in * w_scales[oc];
          for (int ky = 0; ky < 3; ++ky)
            for (int kx = 0; kx < 3; ++kx)
              for (int ic = 0; ic < 3; ++ic) {
                const int iy = oy * 2 - 1 + ky, ix = ox * 2 - 1 + kx;
                if (iy < 0 || iy >= in.h || ix < 0 || ix >= in.w) continue;
                real += (x[(static_cast<size_t>(iy) * in.w + ix) * in.c + ic] - zp_in) * s_in *
                        wq[((static_cast<size_t>(oc) * 3 + ky) * 3 + kx) * 3 + ic] * w_scales[oc];
              }
          const double q = std::min(127.0, std::max(-128.0, std::round(real / s_out) + zp_out));
          const int8_t got = y[(static_cast<size_t>(oy) * out.w + ox) * out.c + oc];
          REQUIRE(std::fabs(got - q) <= 1.0);
          exact += got == q;
          ++total;
        }
  }
  CHECK(exact > total * 99 / 100);
}
