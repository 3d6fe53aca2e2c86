// Fast kernels (fast.h) against the reference kernels, bit for bit: every available ISA, with
// no context and with 1, 2 and 3 threads, on randomized problems (fixed seeds) that cover the
// GEMM's edges (1x1 / 3x3 / 5x5 / 7x7, stride, dilation, asymmetric padding, groups, channel
// counts that are not multiples of the vector widths, batches), extreme values and zero points,
// every multiplier shift, clamps, saturating biases and reductions at the depth limit; the same
// errors for bad arguments; ISA selection; prepacked weights.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "edgeqat/runtime/fast.h"
#include "edgeqat/runtime/runtime.h"
#include "slow_reference.h"

namespace rt = edgeqat::runtime;
namespace fast = rt::fast;
using Catch::Matchers::Contains;
using rt::QuantizedMultiplier;
using rt::Shape4;
using rt_test::uniform;

namespace {

// One way of running the fast kernels: an ISA's table and a context (null or 1-3 threads).
struct Variant {
  std::string isa;
  const rt::KernelTable* table;
  rt::KernelContext* ctx;  // null: no context
  std::string name;
};

std::vector<Variant>& variants() {
  static std::vector<std::unique_ptr<rt::KernelContext>> contexts;
  static std::vector<Variant> all = [] {
    std::vector<Variant> v;
    for (const std::string& isa : fast::available_isas()) {
      const rt::KernelTable* table = &fast::kernels_for_isa(isa);
      v.push_back({isa, table, nullptr, isa + " (no context)"});
      for (int threads = 1; threads <= 3; ++threads) {
        contexts.push_back(std::make_unique<rt::KernelContext>(threads));
        // Split every call, however small the shapes here (the default runs small calls on one
        // thread), so the threaded paths are what is compared.
        contexts.back()->min_parallel_work = 0;
        v.push_back({isa, table, contexts.back().get(),
                     isa + " (" + std::to_string(threads) + " threads)"});
      }
    }
    return v;
  }();
  return all;
}

// Runs `run(table, ctx, out)` for the reference and every variant and requires equal outputs.
// The output buffers carry 64 guard bytes that must stay untouched.
template <class T, class Run>
void compare_all(size_t n, const std::string& what, Run&& run) {
  constexpr size_t kGuard = 64;
  std::vector<T> want(n + kGuard, T(77));
  run(rt::reference::kernels(), nullptr, want.data());
  for (const Variant& v : variants()) {
    std::vector<T> got(n + kGuard, T(77));
    run(*v.table, v.ctx, got.data());
    INFO(what << " on " << v.name);
    if (std::is_floating_point<T>::value) {
      REQUIRE(std::memcmp(got.data(), want.data(), (n + kGuard) * sizeof(T)) == 0);
    } else {
      REQUIRE(got == want);
    }
  }
}

// A multiplier with any valid shift in [-31, 30] (and sometimes a zero or realistic one).
QuantizedMultiplier any_multiplier(std::mt19937_64& rng) {
  switch (uniform(rng, 0, 5)) {
    case 0:
      return rt_test::random_multiplier(rng);
    case 1:
      return {0, 0};
    case 2:  // realistic conv requantization
      return rt::quantize_multiplier(
          std::exp2(std::uniform_real_distribution<double>(-18, 0)(rng)));
    default: {
      const int32_t m = uniform(rng, 0, 3) == 0
                            ? std::numeric_limits<int32_t>::max()
                            : std::uniform_int_distribution<int32_t>(1 << 30, 2147483647)(rng);
      return {m, uniform(rng, rt::kMinShift, rt::kMaxShift)};
    }
  }
}

void random_clamp(std::mt19937_64& rng, int32_t zp, int32_t& lo, int32_t& hi) {
  switch (uniform(rng, 0, 3)) {
    case 0:
      lo = rt::kInt8Min;
      hi = rt::kInt8Max;
      break;
    case 1:  // ReLU
      lo = zp;
      hi = rt::kInt8Max;
      break;
    case 2:  // ReLU6-like
      lo = zp;
      hi = std::min(127, zp + uniform(rng, 0, 100));
      break;
    default: {
      const int a = uniform(rng, -128, 127), b = uniform(rng, -128, 127);
      lo = std::min(a, b);
      hi = std::max(a, b);
    }
  }
}

int32_t random_zero_point(std::mt19937_64& rng) {
  switch (uniform(rng, 0, 4)) {
    case 0:
      return -128;
    case 1:
      return 127;
    default:
      return uniform(rng, -128, 127);
  }
}

std::vector<int8_t> random_values(std::mt19937_64& rng, size_t n, bool weights) {
  switch (uniform(rng, 0, 7)) {
    case 0:
      return std::vector<int8_t>(n, -128);
    case 1:
      return std::vector<int8_t>(n, 127);
    case 2: {  // only the extremes
      std::vector<int8_t> v(n);
      for (auto& x : v) x = static_cast<int8_t>(uniform(rng, 0, 1) ? 127 : (weights ? -127 : -128));
      return v;
    }
    default:  // weights are [-127, 127] by spec; the kernels accept -128 too
      return rt_test::random_int8(rng, n, weights && uniform(rng, 0, 3) ? -127 : -128, 127);
  }
}

std::vector<int32_t> random_bias(std::mt19937_64& rng, int n) {
  std::vector<int32_t> b;
  const int kind = uniform(rng, 0, 5);
  if (kind == 0) return b;  // no bias
  b.resize(static_cast<size_t>(n));
  for (auto& x : b) {
    if (kind == 5) {  // near the int32 limits: acc + bias saturates
      x = uniform(rng, 0, 1) ? std::numeric_limits<int32_t>::max() - uniform(rng, 0, 100000)
                             : std::numeric_limits<int32_t>::min() + uniform(rng, 0, 100000);
    } else {
      x = uniform(rng, -(1 << 22), 1 << 22);
    }
  }
  return b;
}

std::string describe(const rt_test::ConvProblem& c, const Shape4& out) {
  std::ostringstream os;
  os << "in [" << c.in.n << "," << c.in.h << "," << c.in.w << "," << c.in.c << "] filter ["
     << c.filter.n << "," << c.filter.h << "," << c.filter.w << "," << c.filter.c << "] out ["
     << out.n << "," << out.h << "," << out.w << "," << out.c << "] groups " << c.p.groups
     << " stride " << c.p.stride_h << "," << c.p.stride_w << " dilation " << c.p.dilation_h << ","
     << c.p.dilation_w << " pad " << c.p.padding.top << "," << c.p.padding.left << ","
     << c.p.padding.bottom << "," << c.p.padding.right << " zp " << c.p.input_zero_point << "/"
     << c.p.output_zero_point << " clamp [" << c.p.act_min << "," << c.p.act_max << "] bias "
     << (c.bias.empty() ? "none" : std::to_string(c.bias[0]));
  return os.str();
}

// A random conv whose reference costs at most ~1.5M multiply-adds.
rt_test::ConvProblem random_conv(std::mt19937_64& rng) {
  static const int kChannels[] = {1, 2, 3, 4, 5, 7, 8, 16, 17, 24, 32, 64, 67};
  static const int kKernels[] = {1, 1, 1, 2, 3, 3, 3, 5, 7};
  rt_test::ConvProblem c;
  for (;;) {
    const int groups = uniform(rng, 0, 3) == 0 ? (uniform(rng, 0, 1) ? 2 : 4) : 1;
    const int cin_g = kChannels[uniform(rng, 0, groups > 1 ? 8 : 12)];
    const int cout_g = kChannels[uniform(rng, 0, groups > 1 ? 9 : 12)];
    const int kh = kKernels[uniform(rng, 0, 8)];
    const int kw = uniform(rng, 0, 4) == 0 ? kKernels[uniform(rng, 0, 8)] : kh;
    c.in = {uniform(rng, 1, 3), uniform(rng, 1, 14), uniform(rng, 1, 14), groups * cin_g};
    c.filter = {groups * cout_g, kh, kw, cin_g};
    c.p = rt::ConvParams{};
    c.p.groups = groups;
    c.p.stride_h = uniform(rng, 0, 2) ? 1 : uniform(rng, 2, 3);
    c.p.stride_w = uniform(rng, 0, 3) ? c.p.stride_h : uniform(rng, 1, 3);
    c.p.dilation_h = uniform(rng, 0, 3) ? 1 : 2;
    c.p.dilation_w = uniform(rng, 0, 3) ? c.p.dilation_h : uniform(rng, 1, 2);
    if (uniform(rng, 0, 2)) {
      c.p.padding = {uniform(rng, 0, kh / 2 + 1), uniform(rng, 0, kw / 2 + 1),
                     uniform(rng, 0, kh / 2 + 1), uniform(rng, 0, kw / 2 + 1)};
    }
    const int eh = (kh - 1) * c.p.dilation_h + 1, ew = (kw - 1) * c.p.dilation_w + 1;
    if (eh > c.in.h + c.p.padding.top + c.p.padding.bottom ||
        ew > c.in.w + c.p.padding.left + c.p.padding.right) {
      continue;
    }
    const Shape4 out = rt_test::ref_conv_output_shape(c);
    if (rt::num_elements(out) * kh * kw * cin_g > 1500000) continue;
    break;
  }
  c.p.input_zero_point = random_zero_point(rng);
  c.p.output_zero_point = random_zero_point(rng);
  random_clamp(rng, c.p.output_zero_point, c.p.act_min, c.p.act_max);
  c.input = random_values(rng, static_cast<size_t>(rt::num_elements(c.in)), false);
  c.weights = random_values(rng, static_cast<size_t>(rt::num_elements(c.filter)), true);
  c.bias = random_bias(rng, c.filter.n);
  for (int i = 0; i < c.filter.n; ++i) c.mult.push_back(any_multiplier(rng));
  return c;
}

void compare_conv(const rt_test::ConvProblem& c) {
  const Shape4 out = rt_test::ref_conv_output_shape(c);
  compare_all<int8_t>(static_cast<size_t>(rt::num_elements(out)), "conv2d " + describe(c, out),
                      [&](const rt::KernelTable& t, rt::KernelContext* ctx, int8_t* y) {
                        t.conv2d(ctx, c.p, c.mult.data(), c.in, c.input.data(), c.filter,
                                 c.weights.data(), c.bias.empty() ? nullptr : c.bias.data(), out,
                                 y);
                      });
}

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "(no exception)";
}

}  // namespace

TEST_CASE("fast: ISAs, tables and EDGEQAT_RUNTIME_ISA", "[runtime][fast]") {
  const std::vector<std::string> isas = fast::available_isas();
  REQUIRE(!isas.empty());
  CHECK(isas.front() == "portable");
  CHECK(std::string(fast::kernels().name) == "fast");
  for (const std::string& isa : isas) {
    CHECK(std::string(fast::kernels_for_isa(isa).name) == "fast/" + isa);
  }
  CHECK_THROWS_WITH(fast::kernels_for_isa("sse9"), Contains("unknown isa 'sse9'"));
  CHECK_THROWS_AS(fast::kernels_for_isa(""), std::invalid_argument);
#if defined(__x86_64__)
  if (!__builtin_cpu_supports("avx512vnni")) {
    CHECK_THROWS_WITH(fast::kernels_for_isa("avx512_vnni"),
                      Contains("'avx512_vnni' is not supported"));
  }
#endif
  const char* old = std::getenv("EDGEQAT_RUNTIME_ISA");
  const std::string saved = old ? old : "";
  ::setenv("EDGEQAT_RUNTIME_ISA", "portable", 1);
  CHECK(fast::active_isa() == "portable");
  CHECK(fast::kernels().conv2d == fast::kernels_for_isa("portable").conv2d);
  ::setenv("EDGEQAT_RUNTIME_ISA", "avx512_vnni", 1);  // a cap: the best one up to it
  CHECK(fast::active_isa() == isas.back());
  ::setenv("EDGEQAT_RUNTIME_ISA", "bogus", 1);
  CHECK_THROWS_WITH(fast::kernels(), Contains("EDGEQAT_RUNTIME_ISA") && Contains("'bogus'"));
  ::unsetenv("EDGEQAT_RUNTIME_ISA");
  CHECK(fast::active_isa() == isas.back());
  if (old) ::setenv("EDGEQAT_RUNTIME_ISA", saved.c_str(), 1);
}

TEST_CASE("fast conv2d: 600 random problems, bit-exact on every ISA and thread count",
          "[runtime][fast][conv]") {
  std::mt19937_64 rng(20240611);
  for (int t = 0; t < 600; ++t) compare_conv(random_conv(rng));
}

TEST_CASE("fast conv2d: shapes of real networks (1x1, 3x3, 7x7 stride 2, groups)",
          "[runtime][fast][conv]") {
  std::mt19937_64 rng(5);
  struct Case {
    Shape4 in;
    int cout, k, stride, pad, groups;
  };
  const Case cases[] = {
      {{1, 16, 16, 3}, 32, 3, 2, 1, 1},   // MobileNet stem (depth 27)
      {{1, 14, 14, 64}, 67, 1, 1, 0, 1},  // 1x1 projection, odd channel count
      {{2, 9, 9, 17}, 130, 1, 1, 0, 1},   // 1x1 with two panels of 64 + a tail
      {{1, 12, 12, 32}, 40, 3, 1, 1, 1},  // 3x3 same padding
      {{1, 23, 23, 3}, 24, 7, 2, 3, 1},   // ResNet stem, 7x7 stride 2
      {{3, 8, 8, 16}, 16, 5, 1, 2, 1},    // 5x5 batch 3
      {{1, 8, 8, 32}, 64, 3, 2, 1, 4},    // groups 4
      {{1, 7, 7, 128}, 128, 3, 1, 1, 2},  // groups 2, deep
      {{1, 5, 5, 130}, 200, 1, 1, 0, 1},  // many output channels, tiny image
  };
  for (const Case& k : cases) {
    rt_test::ConvProblem c;
    c.in = k.in;
    c.filter = {k.cout, k.k, k.k, k.in.c / k.groups};
    c.p.groups = k.groups;
    c.p.stride_h = c.p.stride_w = k.stride;
    c.p.padding = {k.pad, k.pad, k.pad, k.pad};
    c.p.input_zero_point = uniform(rng, -128, 127);
    c.p.output_zero_point = uniform(rng, -128, 127);
    c.input = rt_test::random_int8(rng, static_cast<size_t>(rt::num_elements(c.in)));
    c.weights = rt_test::random_int8(rng, static_cast<size_t>(rt::num_elements(c.filter)), -127);
    c.bias = random_bias(rng, k.cout);
    for (int i = 0; i < k.cout; ++i) c.mult.push_back(rt_test::random_multiplier(rng));
    compare_conv(c);
  }
  // A tall filter (more rows of taps than the im2col keeps in its line array), padded.
  rt_test::ConvProblem c;
  c.in = {2, 21, 6, 5};
  c.filter = {7, 19, 2, 5};
  c.p.padding = {2, 1, 3, 0};
  c.p.input_zero_point = -7;
  c.input = rt_test::random_int8(rng, static_cast<size_t>(rt::num_elements(c.in)));
  c.weights = rt_test::random_int8(rng, static_cast<size_t>(rt::num_elements(c.filter)), -127);
  for (int i = 0; i < 7; ++i) c.mult.push_back(rt_test::random_multiplier(rng));
  compare_conv(c);
}

TEST_CASE("fast conv2d: every multiplier shift from -31 to 30, extreme zero points",
          "[runtime][fast][conv]") {
  std::mt19937_64 rng(77);
  for (int shift = rt::kMinShift; shift <= rt::kMaxShift; ++shift) {
    rt_test::ConvProblem c;
    c.in = {1, 5, 6, 19};
    c.filter = {21, 3, 3, 19};
    c.p.padding = {1, 0, 1, 2};
    c.p.input_zero_point = shift % 2 ? -128 : 127;
    c.p.output_zero_point = shift % 3 ? 127 : -128;
    c.input = random_values(rng, static_cast<size_t>(rt::num_elements(c.in)), false);
    c.weights = random_values(rng, static_cast<size_t>(rt::num_elements(c.filter)), true);
    for (int i = 0; i < c.filter.n; ++i) {
      c.mult.push_back({std::uniform_int_distribution<int32_t>(1 << 30, 2147483647)(rng), shift});
    }
    c.bias = random_bias(rng, c.filter.n);
    if (shift % 3 == 0) {  // biases at the int32 limits: acc + bias saturates, r near +-2^31
      c.bias.resize(static_cast<size_t>(c.filter.n));
      for (size_t i = 0; i < c.bias.size(); ++i) {
        c.bias[i] = i % 2 ? std::numeric_limits<int32_t>::max() - uniform(rng, 0, 70000)
                          : std::numeric_limits<int32_t>::min() + uniform(rng, 0, 70000);
      }
    }
    compare_conv(c);
  }
}

TEST_CASE(
    "fast conv2d / fully_connected / depthwise: reductions at the depth limit, "
    "worst-case values",
    "[runtime][fast][conv]") {
  // kMaxAccumulationDepth = 65536 products of magnitude up to 128 * 255 = 32640: the sums reach
  // +-2139095040, just inside int32. Channel 0 gets the largest positive sum, 1 the most negative
  // one, 2 a mixed one; zero points -128 and 127 flip the sign of q - zp.
  for (const int32_t zp : {127, -128}) {
    const int8_t q = zp == 127 ? -128 : 127;  // |q - zp| = 255
    const int depth = 65536;
    std::vector<int8_t> w(3 * static_cast<size_t>(depth));
    for (int k = 0; k < depth; ++k) {
      w[k] = static_cast<int8_t>(zp == 127 ? -128 : 127);  // w * (q - zp) = +32640 or +32385
      w[depth + k] = static_cast<int8_t>(zp == 127 ? 127 : -128);
      w[2 * depth + k] = static_cast<int8_t>(k % 3 == 0 ? -128 : 127);
    }
    const std::vector<QuantizedMultiplier> m = {rt::quantize_multiplier(std::exp2(-25.0)),
                                                rt::quantize_multiplier(std::exp2(-24.0)),
                                                rt::quantize_multiplier(std::exp2(-20.0))};
    // 1x1 conv with 65536 input channels over 2x2 pixels.
    rt_test::ConvProblem c;
    c.in = {1, 2, 2, depth};
    c.filter = {3, 1, 1, depth};
    c.p.input_zero_point = zp;
    c.input.assign(static_cast<size_t>(rt::num_elements(c.in)), q);
    c.weights = w;
    c.mult = m;
    compare_conv(c);
    c.bias = {std::numeric_limits<int32_t>::max(), std::numeric_limits<int32_t>::min(), 5};
    compare_conv(c);  // acc + bias saturates
    // 16x16 filter over 256 channels (depth 65536), padding: taps in the padding contribute 0.
    rt_test::ConvProblem d;
    d.in = {1, 16, 16, 256};
    d.filter = {3, 16, 16, 256};
    d.p.input_zero_point = zp;
    d.p.padding = {0, 1, 0, 0};
    d.input.assign(static_cast<size_t>(rt::num_elements(d.in)), q);
    d.weights = w;
    d.mult = m;
    compare_conv(d);
    // Fully connected with 65536 inputs.
    rt::FullyConnectedParams fp;
    fp.input_zero_point = zp;
    const rt::FullyConnectedShape s{2, depth, 3};
    const std::vector<int8_t> x(2 * static_cast<size_t>(depth), q);
    compare_all<int8_t>(6, "fully_connected depth 65536",
                        [&](const rt::KernelTable& t, rt::KernelContext* ctx, int8_t* y) {
                          t.fully_connected(ctx, fp, m.data(), s, x.data(), w.data(), nullptr, y);
                        });
  }
  // Depthwise with a 256x256 window (65536 taps) of worst-case values.
  rt::DepthwiseConvParams p;
  p.input_zero_point = 127;
  const Shape4 in{1, 256, 256, 2}, fs{1, 256, 256, 2}, out{1, 1, 1, 2};
  const std::vector<int8_t> x(static_cast<size_t>(rt::num_elements(in)), -128);
  std::vector<int8_t> w(static_cast<size_t>(rt::num_elements(fs)));
  for (size_t i = 0; i < w.size(); ++i) w[i] = static_cast<int8_t>(i % 2 ? 127 : -128);
  const std::vector<QuantizedMultiplier> m(2, rt::quantize_multiplier(std::exp2(-25.0)));
  compare_all<int8_t>(
      2, "depthwise 65536 taps", [&](const rt::KernelTable& t, rt::KernelContext* ctx, int8_t* y) {
        t.depthwise_conv2d(ctx, p, m.data(), in, x.data(), fs, w.data(), nullptr, out, y);
      });
}

TEST_CASE("fast depthwise_conv2d: 400 random problems, multipliers 1 / 2 / 3",
          "[runtime][fast][depthwise]") {
  std::mt19937_64 rng(99);
  static const int kChannels[] = {1, 3, 5, 8, 16, 17, 31, 32, 33, 64, 67, 96};
  static const int kKernels[] = {1, 2, 3, 3, 3, 5, 7};
  for (int t = 0; t < 400; ++t) {
    rt::DepthwiseConvParams p;
    Shape4 in, fs;
    int oh = 0, ow = 0;
    for (;;) {
      p = rt::DepthwiseConvParams{};
      p.depth_multiplier = uniform(rng, 0, 2) ? 1 : uniform(rng, 2, 3);
      const int kh = kKernels[uniform(rng, 0, 6)],
                kw = uniform(rng, 0, 4) ? kh : kKernels[uniform(rng, 0, 6)];
      in = {uniform(rng, 1, 3), uniform(rng, 1, 16), uniform(rng, 1, 16),
            kChannels[uniform(rng, 0, 11)]};
      fs = {1, kh, kw, in.c * p.depth_multiplier};
      p.stride_h = uniform(rng, 0, 2) ? 1 : 2;
      p.stride_w = uniform(rng, 0, 3) ? p.stride_h : uniform(rng, 1, 3);
      p.dilation_h = uniform(rng, 0, 3) ? 1 : 2;
      p.dilation_w = uniform(rng, 0, 3) ? p.dilation_h : uniform(rng, 1, 3);
      if (uniform(rng, 0, 2)) {
        p.padding = {uniform(rng, 0, kh / 2 + 1), uniform(rng, 0, kw / 2 + 1),
                     uniform(rng, 0, kh / 2 + 1), uniform(rng, 0, kw / 2 + 1)};
      }
      const int eh = (kh - 1) * p.dilation_h + 1, ew = (kw - 1) * p.dilation_w + 1;
      const int ph = in.h + p.padding.top + p.padding.bottom;
      const int pw = in.w + p.padding.left + p.padding.right;
      if (eh > ph || ew > pw) continue;
      oh = (ph - eh) / p.stride_h + 1;
      ow = (pw - ew) / p.stride_w + 1;
      break;
    }
    p.input_zero_point = random_zero_point(rng);
    p.output_zero_point = random_zero_point(rng);
    random_clamp(rng, p.output_zero_point, p.act_min, p.act_max);
    const Shape4 out{in.n, oh, ow, fs.c};
    const auto x = random_values(rng, static_cast<size_t>(rt::num_elements(in)), false);
    const auto w = random_values(rng, static_cast<size_t>(rt::num_elements(fs)), true);
    const auto bias = random_bias(rng, fs.c);
    std::vector<QuantizedMultiplier> m;
    for (int i = 0; i < fs.c; ++i) m.push_back(any_multiplier(rng));
    std::ostringstream what;
    what << "depthwise in [" << in.n << "," << in.h << "," << in.w << "," << in.c << "] k " << fs.h
         << "x" << fs.w << " mult " << p.depth_multiplier << " stride " << p.stride_h << ","
         << p.stride_w << " dil " << p.dilation_h << "," << p.dilation_w << " pad " << p.padding.top
         << "," << p.padding.left << "," << p.padding.bottom << "," << p.padding.right;
    compare_all<int8_t>(static_cast<size_t>(rt::num_elements(out)), what.str(),
                        [&](const rt::KernelTable& tb, rt::KernelContext* ctx, int8_t* y) {
                          tb.depthwise_conv2d(ctx, p, m.data(), in, x.data(), fs, w.data(),
                                              bias.empty() ? nullptr : bias.data(), out, y);
                        });
  }
}

TEST_CASE("fast fully_connected: in 1 / 7 / 64 / 1000, out 1 / 10 / 1000, batch 0..5 and 32",
          "[runtime][fast][fc]") {
  std::mt19937_64 rng(1000);
  for (const int in_features : {1, 7, 64, 1000}) {
    for (const int out_features : {1, 10, 1000}) {
      for (const int batch : {0, 1, 2, 3, 4, 5, 32}) {
        if (batch == 32 && in_features * out_features > 64000) continue;  // keep it quick
        rt::FullyConnectedParams p;
        p.input_zero_point = random_zero_point(rng);
        p.output_zero_point = random_zero_point(rng);
        random_clamp(rng, p.output_zero_point, p.act_min, p.act_max);
        const rt::FullyConnectedShape s{batch, in_features, out_features};
        const auto x = random_values(rng, static_cast<size_t>(batch) * in_features, false);
        const auto w = random_values(rng, static_cast<size_t>(out_features) * in_features, true);
        const auto bias = random_bias(rng, out_features);
        std::vector<QuantizedMultiplier> m;
        for (int i = 0; i < out_features; ++i) m.push_back(any_multiplier(rng));
        compare_all<int8_t>(static_cast<size_t>(batch) * out_features,
                            "fully_connected " + std::to_string(batch) + "x" +
                                std::to_string(in_features) + " -> " + std::to_string(out_features),
                            [&](const rt::KernelTable& t, rt::KernelContext* ctx, int8_t* y) {
                              t.fully_connected(ctx, p, m.data(), s, x.data(), w.data(),
                                                bias.empty() ? nullptr : bias.data(), y);
                            });
      }
    }
  }
}

TEST_CASE("fast add: random parameters and sizes (all int8 pairs, large counts)",
          "[runtime][fast][add]") {
  std::mt19937_64 rng(4242);
  std::uniform_real_distribution<double> log_scale(-12.0, 2.0);
  for (int t = 0; t < 60; ++t) {
    const double s1 = std::exp2(log_scale(rng)), s2 = std::exp2(log_scale(rng));
    const double so = std::exp2(log_scale(rng));
    rt::AddParams p;
    try {
      p = rt::make_add_params(s1, random_zero_point(rng), s2, random_zero_point(rng), so,
                              random_zero_point(rng));
    } catch (const std::invalid_argument&) {
      continue;  // a scale ratio whose output multiplier does not fit
    }
    random_clamp(rng, p.output_zero_point, p.act_min, p.act_max);
    std::vector<int8_t> a, b;
    if (t % 3 == 0) {
      for (int i = -128; i <= 127; ++i)
        for (int j = -128; j <= 127; ++j) {
          a.push_back(static_cast<int8_t>(i));
          b.push_back(static_cast<int8_t>(j));
        }
    } else {
      const size_t n = static_cast<size_t>(uniform(rng, 0, 3) ? uniform(rng, 0, 300) : 100000);
      a = rt_test::random_int8(rng, n);
      b = rt_test::random_int8(rng, n);
    }
    compare_all<int8_t>(a.size(), "add",
                        [&](const rt::KernelTable& tb, rt::KernelContext* ctx, int8_t* y) {
                          tb.add(ctx, p, a.size(), a.data(), b.data(), y);
                        });
  }
}

TEST_CASE("fast pooling: 200 random max / average pools, global pooling", "[runtime][fast][pool]") {
  std::mt19937_64 rng(8080);
  int done = 0;
  while (done < 200) {
    const Shape4 in{uniform(rng, 1, 3), uniform(rng, 1, 12), uniform(rng, 1, 12),
                    uniform(rng, 0, 3) ? uniform(rng, 1, 20) : 67};
    rt::PoolParams p;
    if (done % 10 == 0) {
      p = rt::make_global_pool_params(in);
    } else {
      p.filter_h = uniform(rng, 1, 5);
      p.filter_w = uniform(rng, 1, 5);
      p.stride_h = uniform(rng, 1, 3);
      p.stride_w = uniform(rng, 1, 3);
      p.padding = {uniform(rng, 0, p.filter_h - 1), uniform(rng, 0, p.filter_w - 1),
                   uniform(rng, 0, p.filter_h - 1), uniform(rng, 0, p.filter_w - 1)};
    }
    random_clamp(rng, uniform(rng, -128, 127), p.act_min, p.act_max);
    const int ph = in.h + p.padding.top + p.padding.bottom;
    const int pw = in.w + p.padding.left + p.padding.right;
    if (p.filter_h > ph || p.filter_w > pw) continue;
    const Shape4 out{in.n, (ph - p.filter_h) / p.stride_h + 1, (pw - p.filter_w) / p.stride_w + 1,
                     in.c};
    // Windows entirely in the padding are an error: skip such draws.
    try {
      rt::check_pool2d(p, in, out, "t");
    } catch (const std::invalid_argument&) {
      continue;
    }
    const auto x = random_values(rng, static_cast<size_t>(rt::num_elements(in)), false);
    const size_t n = static_cast<size_t>(rt::num_elements(out));
    compare_all<int8_t>(n, "max_pool2d",
                        [&](const rt::KernelTable& t, rt::KernelContext* ctx, int8_t* y) {
                          t.max_pool2d(ctx, p, in, x.data(), out, y);
                        });
    compare_all<int8_t>(n, "average_pool2d",
                        [&](const rt::KernelTable& t, rt::KernelContext* ctx, int8_t* y) {
                          t.average_pool2d(ctx, p, in, x.data(), out, y);
                        });
    ++done;
  }
}

TEST_CASE("fast quantize / dequantize: ties, NaN, infinities, huge values, large counts",
          "[runtime][fast][quantize]") {
  std::mt19937_64 rng(123);
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (int t = 0; t < 40; ++t) {
    const float scale =
        static_cast<float>(std::exp2(std::uniform_real_distribution<double>(-20, 4)(rng)));
    const rt::QuantizeParams p = rt::make_quantize_params(scale, random_zero_point(rng));
    const size_t n = t % 4 == 0 ? 100000 : static_cast<size_t>(uniform(rng, 0, 2000));
    std::vector<float> x(n);
    for (auto& v : x) {
      switch (uniform(rng, 0, 9)) {
        case 0:
          v = nan;
          break;
        case 1:
          v = uniform(rng, 0, 1) ? inf : -inf;
          break;
        case 2:  // exact ties k + 1/2 (scale is a power of two)
          v = (static_cast<float>(uniform(rng, -300, 300)) + 0.5f) * scale;
          break;
        case 3:
          v = std::uniform_real_distribution<float>(-1e30f, 1e30f)(rng);
          break;
        case 4:
          v = uniform(rng, 0, 1) ? -0.0f : std::numeric_limits<float>::denorm_min();
          break;
        default:
          v = std::uniform_real_distribution<float>(-200.0f, 200.0f)(rng) * scale;
      }
    }
    compare_all<int8_t>(n, "quantize",
                        [&](const rt::KernelTable& tb, rt::KernelContext* ctx, int8_t* y) {
                          tb.quantize(ctx, p, n, x.data(), y);
                        });
    const auto q = rt_test::random_int8(rng, n);
    compare_all<float>(n, "dequantize",
                       [&](const rt::KernelTable& tb, rt::KernelContext* ctx, float* y) {
                         tb.dequantize(ctx, p, n, q.data(), y);
                       });
  }
}

TEST_CASE("fast kernels: bad arguments throw the reference's errors", "[runtime][fast][errors]") {
  const rt::KernelTable& ref = rt::reference::kernels();
  const std::vector<int8_t> x(4096, 1), w(4096, 1);
  std::vector<int8_t> y_buffer(4096);
  std::vector<float> f_buffer(16, 1.0f);
  int8_t* const y = y_buffer.data();
  float* const f = f_buffer.data();
  const std::vector<QuantizedMultiplier> m(64, rt::quantize_multiplier(0.5));
  std::vector<QuantizedMultiplier> bad_m = m;
  bad_m[3] = {-1, 0};
  for (const Variant& v : variants()) {
    const rt::KernelTable& t = *v.table;
    INFO(v.name);
    auto same = [&](auto call) {
      const std::string want = error_of([&] { call(ref); });
      CHECK(want != "(no exception)");
      CHECK(error_of([&] { call(t); }) == want);
    };
    // conv2d
    rt::ConvParams cp;
    const Shape4 in{1, 3, 3, 2}, fs{4, 2, 2, 2}, out{1, 2, 2, 4};
    auto conv = [&](rt::ConvParams p, const QuantizedMultiplier* mm, Shape4 i, const int8_t* xx,
                    Shape4 f4, const int8_t* ww, Shape4 o, int8_t* yy) {
      return
          [=](const rt::KernelTable& k) { k.conv2d(v.ctx, p, mm, i, xx, f4, ww, nullptr, o, yy); };
    };
    REQUIRE_NOTHROW(conv(cp, m.data(), in, x.data(), fs, w.data(), out, y)(t));
    rt::ConvParams g3 = cp;
    g3.groups = 3;
    same(conv(g3, m.data(), in, x.data(), fs, w.data(), out, y));
    rt::ConvParams zp = cp;
    zp.input_zero_point = 128;
    same(conv(zp, m.data(), in, x.data(), fs, w.data(), out, y));
    rt::ConvParams act = cp;
    act.act_min = 5;
    act.act_max = 4;
    same(conv(act, m.data(), in, x.data(), fs, w.data(), out, y));
    same(conv(cp, m.data(), in, x.data(), fs, w.data(), {1, 3, 2, 4}, y));
    same(conv(cp, bad_m.data(), in, x.data(), fs, w.data(), out, y));
    same(conv(cp, m.data(), in, nullptr, fs, w.data(), out, y));
    same(conv(cp, m.data(), in, x.data(), fs, nullptr, out, y));
    same(conv(cp, m.data(), in, x.data(), fs, w.data(), out, nullptr));
    same(conv(cp, nullptr, in, x.data(), fs, w.data(), out, y));
    same(conv(cp, m.data(), {1, 1, 1, 65537}, x.data(), {1, 1, 1, 65537}, w.data(), {1, 1, 1, 1},
              y));
    // depthwise
    rt::DepthwiseConvParams dp;
    dp.depth_multiplier = 2;
    auto dw = [&](rt::DepthwiseConvParams p, Shape4 i, Shape4 f4, Shape4 o,
                  const QuantizedMultiplier* mm) {
      return [=](const rt::KernelTable& k) {
        k.depthwise_conv2d(v.ctx, p, mm, i, x.data(), f4, w.data(), nullptr, o, y);
      };
    };
    REQUIRE_NOTHROW(dw(dp, {1, 3, 3, 2}, {1, 2, 2, 4}, {1, 2, 2, 4}, m.data())(t));
    same(dw(dp, {1, 3, 3, 2}, {1, 2, 2, 5}, {1, 2, 2, 4}, m.data()));
    same(dw(dp, {1, 3, 3, 2}, {1, 2, 2, 4}, {1, 2, 3, 4}, m.data()));
    same(dw(dp, {1, 3, 3, 2}, {1, 2, 2, 4}, {1, 2, 2, 4}, bad_m.data()));
    rt::DepthwiseConvParams dp0 = dp;
    dp0.stride_w = 0;
    same(dw(dp0, {1, 3, 3, 2}, {1, 2, 2, 4}, {1, 2, 2, 4}, m.data()));
    // fully connected
    rt::FullyConnectedParams fp;
    auto fc = [&](rt::FullyConnectedParams p, rt::FullyConnectedShape s, const int8_t* xx) {
      return [=](const rt::KernelTable& k) {
        k.fully_connected(v.ctx, p, m.data(), s, xx, w.data(), nullptr, y);
      };
    };
    REQUIRE_NOTHROW(fc(fp, {2, 8, 4}, x.data())(t));
    same(fc(fp, {-1, 8, 4}, x.data()));
    same(fc(fp, {2, 65537, 4}, x.data()));
    same(fc(fp, {2, 8, 4}, nullptr));
    rt::FullyConnectedParams fz = fp;
    fz.output_zero_point = -129;
    same(fc(fz, {2, 8, 4}, x.data()));
    // add
    rt::AddParams ap = rt::make_add_params(0.5, 0, 0.25, 0, 0.5, 0);
    REQUIRE_NOTHROW(t.add(v.ctx, ap, 8, x.data(), w.data(), y));
    rt::AddParams ab = ap;
    ab.left_shift = 21;
    same([&](const rt::KernelTable& k) { k.add(v.ctx, ab, 8, x.data(), w.data(), y); });
    same([&](const rt::KernelTable& k) { k.add(v.ctx, ap, 8, x.data(), nullptr, y); });
    // pools
    const rt::PoolParams pp = rt::make_pool_params(2, 2, 2, 2);
    same([&](const rt::KernelTable& k) {
      k.max_pool2d(v.ctx, pp, {1, 4, 4, 3}, x.data(), {1, 2, 3, 3}, y);
    });
    same([&](const rt::KernelTable& k) {
      k.average_pool2d(v.ctx, pp, {1, 4, 4, 3}, x.data(), {1, 2, 2, 4}, y);
    });
    rt::PoolParams pad = pp;
    pad.padding.top = 2;
    same([&](const rt::KernelTable& k) {
      k.average_pool2d(v.ctx, pad, {1, 4, 4, 3}, x.data(), {1, 3, 2, 3}, y);
    });
    // quantize / dequantize
    rt::QuantizeParams qp;
    qp.scale = -1.0f;
    same([&](const rt::KernelTable& k) { k.quantize(v.ctx, qp, 16, f, y); });
    same([&](const rt::KernelTable& k) { k.dequantize(v.ctx, qp, 16, x.data(), f); });
    rt::QuantizeParams qz;
    qz.zero_point = 300;
    same([&](const rt::KernelTable& k) { k.quantize(v.ctx, qz, 16, nullptr, y); });
  }
}

TEST_CASE("fast prepacked weights: conv2d / fully_connected / depthwise on packed weights",
          "[runtime][fast][packed]") {
  std::mt19937_64 rng(31);
  rt::KernelContext ctx(2);
  for (const std::string& isa : fast::available_isas()) {
    INFO(isa);
    for (int t = 0; t < 20; ++t) {
      const rt_test::ConvProblem c = random_conv(rng);
      const Shape4 out = rt_test::ref_conv_output_shape(c);
      const fast::PackedConv2d packed = fast::pack_conv2d(c.p, c.filter, c.weights.data(), isa);
      CHECK(packed.gemm.isa == isa);
      const fast::PackedConv2d copy = packed;  // copies keep their alignment
      std::vector<int8_t> want(static_cast<size_t>(rt::num_elements(out))), got(want.size());
      const int32_t* bias = c.bias.empty() ? nullptr : c.bias.data();
      rt::reference::conv2d(nullptr, c.p, c.mult.data(), c.in, c.input.data(), c.filter,
                            c.weights.data(), bias, out, want.data());
      fast::conv2d_packed(&ctx, c.p, c.mult.data(), copy, c.in, c.input.data(), bias, out,
                          got.data());
      REQUIRE(got == want);
      std::fill(got.begin(), got.end(), 0);
      fast::conv2d_packed(nullptr, c.p, c.mult.data(), packed, c.in, c.input.data(), bias, out,
                          got.data());
      REQUIRE(got == want);
      if (c.p.groups > 1) {
        rt::ConvParams other = c.p;
        other.groups = 1;
        other.act_min = -128;
        CHECK_THROWS_AS(fast::conv2d_packed(&ctx, other, c.mult.data(), packed, c.in,
                                            c.input.data(), bias, out, got.data()),
                        std::invalid_argument);
      }
    }
    // Fully connected.
    const rt::FullyConnectedShape s{3, 100, 70};
    rt::FullyConnectedParams fp;
    fp.input_zero_point = -3;
    const auto x = rt_test::random_int8(rng, 300), w = rt_test::random_int8(rng, 7000, -127);
    std::vector<QuantizedMultiplier> m;
    for (int i = 0; i < 70; ++i) m.push_back(rt_test::random_multiplier(rng));
    const fast::PackedFullyConnected pf = fast::pack_fully_connected(s, w.data(), isa);
    std::vector<int8_t> want(210), got(210);
    rt::reference::fully_connected(nullptr, fp, m.data(), s, x.data(), w.data(), nullptr,
                                   want.data());
    fast::fully_connected_packed(&ctx, fp, m.data(), pf, s, x.data(), nullptr, got.data());
    CHECK(got == want);
    CHECK_THROWS_WITH(fast::fully_connected_packed(&ctx, fp, m.data(), pf, {3, 100, 69}, x.data(),
                                                   nullptr, got.data()),
                      Contains("differs from the packed weights"));
    // Depthwise.
    rt::DepthwiseConvParams dp;
    dp.depth_multiplier = 2;
    dp.padding = {1, 1, 1, 1};
    const Shape4 din{2, 6, 7, 5}, dfs{1, 3, 3, 10}, dout{2, 6, 7, 10};
    const auto dx = rt_test::random_int8(rng, static_cast<size_t>(rt::num_elements(din)));
    const auto dwt = rt_test::random_int8(rng, 90);
    const fast::PackedDepthwiseConv2d pd = fast::pack_depthwise_conv2d(dp, dfs, dwt.data(), isa);
    std::vector<int8_t> dwant(840), dgot(840);
    rt::reference::depthwise_conv2d(nullptr, dp, m.data(), din, dx.data(), dfs, dwt.data(), nullptr,
                                    dout, dwant.data());
    fast::depthwise_conv2d_packed(&ctx, dp, m.data(), pd, din, dx.data(), nullptr, dout,
                                  dgot.data());
    CHECK(dgot == dwant);
  }
  CHECK_THROWS_WITH(fast::pack_conv2d({}, {1, 1, 1, 1}, nullptr, "nope"), Contains("'nope'"));
  CHECK_THROWS_WITH(fast::pack_conv2d({}, {1, 1, 1, 1}, nullptr),
                    Contains("pack_conv2d: filter must not be null"));
  CHECK_THROWS_WITH(fast::conv2d_packed(&ctx, {}, nullptr, fast::PackedConv2d{}, {1, 1, 1, 1},
                                        nullptr, nullptr, {1, 1, 1, 1}, nullptr),
                    Contains("empty"));
}

TEST_CASE("fast kernels: one context reused with changing thread counts",
          "[runtime][fast][threads]") {
  std::mt19937_64 rng(555);
  rt::KernelContext ctx;
  const rt::KernelTable& t = fast::kernels();
  for (int i = 0; i < 30; ++i) {
    ctx.num_threads = 1 + i % 4;  // the pool is rebuilt when the count changes
    const rt_test::ConvProblem c = random_conv(rng);
    const Shape4 out = rt_test::ref_conv_output_shape(c);
    std::vector<int8_t> want(static_cast<size_t>(rt::num_elements(out))), got(want.size());
    const int32_t* bias = c.bias.empty() ? nullptr : c.bias.data();
    rt::reference::conv2d(nullptr, c.p, c.mult.data(), c.in, c.input.data(), c.filter,
                          c.weights.data(), bias, out, want.data());
    t.conv2d(&ctx, c.p, c.mult.data(), c.in, c.input.data(), c.filter, c.weights.data(), bias, out,
             got.data());
    REQUIRE(got == want);
  }
  rt::KernelContext moved = std::move(ctx);  // contexts move (with their pool), never copy
  moved.num_threads = 0;                     // below 1 acts as 1
  const rt_test::ConvProblem c = random_conv(rng);
  const Shape4 out = rt_test::ref_conv_output_shape(c);
  std::vector<int8_t> got(static_cast<size_t>(rt::num_elements(out)));
  CHECK_NOTHROW(t.conv2d(&moved, c.p, c.mult.data(), c.in, c.input.data(), c.filter,
                         c.weights.data(), nullptr, out, got.data()));
}
