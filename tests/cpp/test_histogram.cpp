// Tests of the histogram observer through the public C++ API (no Python):
// edgeqat::observe_histogram_ and edgeqat::histogram_range, plus the
// torch-free arithmetic behind them (ops/histogram_math.h):
//  - accumulation against a scalar reference written here (plain loops, the
//    documented bin formula), growth by powers of two on hand-computed cases,
//    and the exactness of the growth (filled batch by batch == filled at once);
//  - expected_squared_error against a brute-force integral that runs the
//    library's fake-quant op on dense samples of every bin;
//  - percentile on hand-computed histograms; MSE never worse than min / max;
//  - errors (messages, state untouched), autograd (version counters);
//  - the fused observer step edgeqat::observe_fake_quant_ against the unfused
//    ops it replaces, through the C++ API.
#include "catch_torch.h"

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "edgeqat/ops.h"
#include "ops/histogram_math.h"

namespace {

using torch::Tensor;
namespace hist = edgeqat::detail::histogram;

constexpr double kInf = std::numeric_limits<double>::infinity();

struct State {
  Tensor counts, lo, hi;
};

State empty_state(int64_t bins) {
  const auto f64 = torch::TensorOptions().dtype(torch::kDouble);
  return {torch::zeros({bins}, torch::kLong), torch::full({}, kInf, f64),
          torch::full({}, -kInf, f64)};
}

void observe(State& s, const Tensor& x) { edgeqat::observe_histogram_(s.counts, s.lo, s.hi, x); }

std::vector<int64_t> to_vector(const Tensor& counts) {
  const Tensor c = counts.contiguous();
  return {c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel()};
}

// The documented bin of v: floor((v - lo) * (bins / (hi - lo))), clamped.
int64_t ref_bin(double v, double lo, double hi, int64_t bins) {
  if (hi == lo) {
    return 0;
  }
  const double t = std::floor((v - lo) * (static_cast<double>(bins) / (hi - lo)));
  return static_cast<int64_t>(std::min(std::max(t, 0.0), static_cast<double>(bins - 1)));
}

std::vector<int64_t> ref_counts(const Tensor& x_in, double lo, double hi, int64_t bins) {
  const Tensor x = x_in.to(torch::kDouble).contiguous();
  std::vector<int64_t> out(bins, 0);
  for (int64_t i = 0; i < x.numel(); ++i) {
    ++out[ref_bin(x.data_ptr<double>()[i], lo, hi, bins)];
  }
  return out;
}

Tensor values(std::vector<float> v) {
  return torch::from_blob(v.data(), {static_cast<int64_t>(v.size())}, torch::kFloat).clone();
}

// ---------------------------------------------------------------------------
// Accumulation and growth
// ---------------------------------------------------------------------------

TEST_CASE("histogram: first batch sets the range, counts by the documented formula") {
  torch::manual_seed(1);
  const Tensor x = torch::randn({1000}) * 3 + 1;
  State s = empty_state(64);
  observe(s, x);
  const double lo = s.lo.item<double>(), hi = s.hi.item<double>();
  CHECK(lo == x.min().item<float>());
  CHECK(hi == x.max().item<float>());
  CHECK(to_vector(s.counts) == ref_counts(x, lo, hi, 64));
  // a batch inside the range: no growth, counts add up
  const Tensor inside = x.slice(0, 0, 300) * 0.5 + 0.5;
  REQUIRE(inside.min().item<float>() >= lo);
  REQUIRE(inside.max().item<float>() <= hi);
  observe(s, inside);
  CHECK(s.lo.item<double>() == lo);
  std::vector<int64_t> want = ref_counts(x, lo, hi, 64);
  const auto more = ref_counts(inside, lo, hi, 64);
  for (size_t i = 0; i < want.size(); ++i) want[i] += more[i];
  CHECK(to_vector(s.counts) == want);
}

TEST_CASE("histogram: growth by powers of two, hand-computed") {
  State s = empty_state(4);
  observe(s, values({0.0f, 1.0f, 4.0f}));  // bins of 1: [0,1) [1,2) [2,3) [3,4]
  CHECK(to_vector(s.counts) == std::vector<int64_t>{1, 1, 0, 1});
  observe(s, values({7.5f}));  // above: [0, 8], bins of 2, old pairs merge
  CHECK(s.lo.item<double>() == 0.0);
  CHECK(s.hi.item<double>() == 8.0);
  CHECK(to_vector(s.counts) == std::vector<int64_t>{2, 1, 0, 1});
  observe(s, values({-9.0f}));  // below: 2x is not enough, 4x: [-24, 8], the old range on top
  CHECK(s.lo.item<double>() == -24.0);
  CHECK(s.hi.item<double>() == 8.0);
  CHECK(to_vector(s.counts) == std::vector<int64_t>{0, 1, 0, 4});
}

TEST_CASE("histogram: growth is exact, batch by batch equals all at once") {
  torch::manual_seed(2);
  const std::vector<Tensor> batches = {torch::rand({500}) + 2, torch::randn({800}) * 5,
                                       torch::rand({300}) * 70, -torch::rand({300}) * 500};
  State s = empty_state(128);
  for (const auto& b : batches) {
    observe(s, b);
  }
  const double lo = s.lo.item<double>(), hi = s.hi.item<double>();
  CHECK(to_vector(s.counts) == ref_counts(torch::cat(batches), lo, hi, 128));
  CHECK(s.counts.sum().item<int64_t>() == 1900);
}

TEST_CASE("histogram math: grown_range and rebin") {
  using hist::Range;
  const Range empty{kInf, -kInf};
  CHECK(hist::grown_range(empty, -1.0, 2.0, 8).lo == -1.0);
  const Range r{0.0, 8.0};
  const Range same = hist::grown_range(r, 1.0, 8.0, 8);
  CHECK((same.lo == 0.0 && same.hi == 8.0));
  const Range both = hist::grown_range(r, -1.0, 9.0, 8);  // 2x: 8 more old bins, 4 each side
  CHECK((both.lo == -4.0 && both.hi == 12.0));
  const Range point = hist::grown_range(Range{3.0, 3.0}, 1.0, 2.0, 8);
  CHECK((point.lo == 1.0 && point.hi == 3.0));
  std::vector<int64_t> out(8, 0);
  hist::rebin({1, 2, 3, 4, 5, 6, 7, 8}, r, out, both);  // pairs of old bins, 2 bins up
  CHECK(out == std::vector<int64_t>{0, 0, 3, 7, 11, 15, 0, 0});
}

TEST_CASE("histogram: empty x and errors leave the state untouched") {
  State s = empty_state(8);
  observe(s, values({0.0f, 1.0f}));
  const State before{s.counts.clone(), s.lo.clone(), s.hi.clone()};
  const auto untouched = [&] {
    CHECK(torch::equal(s.counts, before.counts));
    CHECK(torch::equal(s.lo, before.lo));
    CHECK(torch::equal(s.hi, before.hi));
  };
  observe(s, torch::empty({0, 3}));
  untouched();
  CHECK_THROWS_WITH(observe(s, values({0.5f, NAN, INFINITY})),
                    Catch::Contains("x contains 1 NaN and 1 infinite value(s)"));
  untouched();
  Tensor bad = s.counts.clone();
  bad[2] = -1;
  CHECK_THROWS_WITH(edgeqat::observe_histogram_(bad, s.lo, s.hi, values({0.5f})),
                    Catch::Contains("histogram[2] = -1 is negative"));
  Tensor half_lo = s.lo.to(torch::kHalf);
  CHECK_THROWS_WITH(edgeqat::observe_histogram_(s.counts, half_lo, s.hi, values({0.5f})),
                    Catch::Contains("hist_min must be a float32 or float64 tensor"));
  untouched();
}

TEST_CASE("histogram: autograd bumps versions, x may require grad") {
  State s = empty_state(8);
  const auto v = s.counts._version();
  observe(s, torch::randn({5}).requires_grad_());
  CHECK(s.counts._version() > v);
  CHECK(s.counts.sum().item<int64_t>() == 5);
}

// ---------------------------------------------------------------------------
// Range selection
// ---------------------------------------------------------------------------

// The mean of (x - fq(x))^2 over `samples` evenly spread points per bin,
// weighted by the counts, with the library's fake-quant op.
double brute_force_error(const std::vector<int64_t>& counts, const hist::Range& r, float qlo,
                         float qhi, int64_t num_bits, bool narrow, int64_t samples) {
  const int64_t bins = static_cast<int64_t>(counts.size());
  const double w = (r.hi - r.lo) / bins;
  const Tensor k = (torch::arange(samples, torch::kDouble) + 0.5) / samples;
  double total = 0.0, n = 0.0;
  for (int64_t i = 0; i < bins; ++i) {
    if (counts[i] == 0) continue;
    const Tensor x = (r.lo + i * w + k * w).to(torch::kFloat);
    const Tensor y = edgeqat::fake_quant_with_min_max_vars(x, torch::tensor(qlo),
                                                           torch::tensor(qhi), num_bits, narrow);
    total += counts[i] * (x.to(torch::kDouble) - y.to(torch::kDouble)).pow(2).mean().item<double>();
    n += counts[i];
  }
  return total / n;
}

TEST_CASE("histogram math: expected_squared_error is the integral of the fake-quant error") {
  const std::vector<int64_t> counts = {3, 0, 10, 25, 40, 22, 9, 0, 2, 1};
  const hist::Range r{-2.3, 4.1};
  struct Case {
    float lo, hi;
    int64_t bits;
    bool narrow;
  };
  for (const Case c :
       {Case{-2.3f, 4.1f, 8, false}, Case{-1.0f, 1.5f, 4, false}, Case{-0.5f, 3.0f, 3, true},
        Case{0.0f, 2.0f, 2, false}, Case{-1.7f, 1.7f, 8, true}, Case{0.0f, 0.0f, 8, false}}) {
    const double exact = hist::expected_squared_error(counts, r, c.lo, c.hi, c.bits, c.narrow);
    const double brute = brute_force_error(counts, r, c.lo, c.hi, c.bits, c.narrow, 20000);
    INFO("range [" << c.lo << ", " << c.hi << "], " << c.bits << " bits");
    CHECK(exact == Approx(brute).epsilon(2e-4));
  }
}

TEST_CASE("histogram_range: percentile on hand-computed histograms") {
  // 100 values spread uniformly over [0, 10]: the p-quantile is p / 10.
  State s{torch::full({10}, 10, torch::kLong), torch::tensor(0.0, torch::kDouble),
          torch::tensor(10.0, torch::kDouble)};
  auto [lo, hi] = edgeqat::histogram_range(s.counts, s.lo, s.hi, "percentile", 95.0);
  CHECK(lo.item<float>() == 0.0f);  // the range contains 0
  CHECK(hi.item<float>() == Approx(9.5).epsilon(1e-6));
  // over [-5, 5]: |x| is uniform on [0, 5]; symmetric 90 % -> 4.5
  s.lo.fill_(-5.0), s.hi.fill_(5.0);
  std::tie(lo, hi) =
      edgeqat::histogram_range(s.counts, s.lo, s.hi, "percentile", 90.0, 8, false, true);
  CHECK(hi.item<float>() == Approx(4.5).epsilon(1e-6));
  CHECK(lo.item<float>() == -hi.item<float>());
  // asymmetric 90 %: [q(0.1), q(0.9)] = [-4, 4]
  std::tie(lo, hi) = edgeqat::histogram_range(s.counts, s.lo, s.hi, "percentile", 90.0);
  CHECK(lo.item<float>() == Approx(-4.0).epsilon(1e-6));
  CHECK(hi.item<float>() == Approx(4.0).epsilon(1e-6));
  CHECK(lo.scalar_type() == torch::kFloat);
}

TEST_CASE("histogram_range: MSE is never worse than min / max and clips Laplace tails") {
  torch::manual_seed(3);
  // Laplace(0, 1) as the difference of two exponentials
  const Tensor u1 = torch::rand({100000}), u2 = torch::rand({100000});
  const Tensor x = torch::log(u1.clamp_min(1e-12)) - torch::log(u2.clamp_min(1e-12));
  State s = empty_state(1024);
  observe(s, x);
  const hist::Range r{s.lo.item<double>(), s.hi.item<double>()};
  const auto counts = to_vector(s.counts);
  for (const bool symmetric : {false, true}) {
    auto [lo, hi] =
        edgeqat::histogram_range(s.counts, s.lo, s.hi, "mse", 99.99, 4, false, symmetric);
    const float l = lo.item<float>(), h = hi.item<float>();
    float mn = static_cast<float>(std::min(r.lo, 0.0)), mx = static_cast<float>(r.hi);
    if (symmetric) {
      mx = std::max(-mn, mx), mn = -mx;
    }
    const double e = hist::expected_squared_error(counts, r, l, h, 4, false);
    const double e_minmax = hist::expected_squared_error(counts, r, mn, mx, 4, false);
    INFO("symmetric " << symmetric << ": [" << l << ", " << h << "]");
    CHECK(e < 0.5 * e_minmax);
    CHECK((mn < l && l < 0.0f && 0.0f < h && h < mx));
    // and in the actual error of the data
    const auto fq_error = [&](float a, float b) {
      const Tensor y =
          edgeqat::fake_quant_with_min_max_vars(x, torch::tensor(a), torch::tensor(b), 4, false);
      return (y - x).pow(2).mean().item<double>();
    };
    CHECK(fq_error(l, h) < 0.5 * fq_error(mn, mx));
  }
}

TEST_CASE("histogram_range: errors name the argument") {
  State s = empty_state(8);
  CHECK_THROWS_WITH(edgeqat::histogram_range(s.counts, s.lo, s.hi),
                    Catch::Contains("the histogram is empty"));
  observe(s, values({0.0f, 1.0f}));
  CHECK_THROWS_WITH(edgeqat::histogram_range(s.counts, s.lo, s.hi, "kl"),
                    Catch::Contains("method must be 'mse' or 'percentile', got 'kl'"));
  CHECK_THROWS_WITH(edgeqat::histogram_range(s.counts, s.lo, s.hi, "percentile", 20.0),
                    Catch::Contains("percentile must be in [50, 100], got 20"));
}

// ---------------------------------------------------------------------------
// The fused observer step (same C++ API family)
// ---------------------------------------------------------------------------

TEST_CASE("observe_fake_quant_: the unfused ops, bit for bit, through the C++ API") {
  torch::manual_seed(4);
  for (const bool symmetric : {false, true}) {
    Tensor lo_a = torch::full({}, kInf), hi_a = torch::full({}, -kInf);
    Tensor lo_b = lo_a.clone(), hi_b = hi_a.clone();
    for (int i = 0; i < 3; ++i) {
      const Tensor x = torch::randn({16, 8}) * (1 + i) + 0.3;
      const Tensor y = edgeqat::observe_fake_quant_(lo_a, hi_a, x, std::nullopt, 0.01, false,
                                                    symmetric, 8, symmetric);
      edgeqat::observe_min_max_(lo_b, hi_b, x, std::nullopt, 0.01, false);
      Tensor qlo = lo_b.clamp_max(0.0), qhi = hi_b.clamp_min(0.0);
      if (symmetric) {
        qhi = torch::maximum(-qlo, qhi), qlo = -qhi;
      }
      const Tensor want = edgeqat::fake_quant_with_min_max_vars(x, qlo, qhi, 8, symmetric);
      CHECK(torch::equal(lo_a, lo_b));
      CHECK(torch::equal(hi_a, hi_b));
      CHECK(torch::equal(y, want));
    }
  }
  // per channel, with the straight-through gradient to x only
  Tensor lo = torch::full({4}, kInf), hi = torch::full({4}, -kInf);
  const Tensor x = (torch::randn({4, 6}) * 2).requires_grad_();
  const Tensor y = edgeqat::observe_fake_quant_(lo, hi, x, 0, 1.0, false, true, 8, true);
  y.sum().backward();
  const Tensor b = torch::maximum(-lo.clamp_max(0.0), hi.clamp_min(0.0));
  CHECK(torch::equal(
      y, edgeqat::fake_quant_with_min_max_vars_per_channel(x.detach(), -b, b, 0, 8, true)));
  const Tensor x2 = x.detach().clone().requires_grad_();
  edgeqat::fake_quant_with_min_max_vars_per_channel(x2, -b, b, 0, 8, true).sum().backward();
  CHECK(torch::equal(x.grad(), x2.grad()));
  CHECK(x.grad().sum().item<float>() > 0.0f);
  CHECK_FALSE(lo.requires_grad());
}

TEST_CASE("observe_fake_quant_: clamp bounds observe clamp(x), through the C++ API") {
  torch::manual_seed(5);
  Tensor lo_a = torch::full({}, kInf), hi_a = torch::full({}, -kInf);
  Tensor lo_b = lo_a.clone(), hi_b = hi_a.clone();
  for (int i = 0; i < 3; ++i) {
    const Tensor x = torch::randn({4, 8, 3, 3}) * (4 + i);
    const Tensor y = edgeqat::observe_fake_quant_(lo_a, hi_a, x, std::nullopt, 0.01, false, false,
                                                  8, false, 0.0, 6.0);
    edgeqat::observe_min_max_(lo_b, hi_b, x.clamp(0.0, 6.0), std::nullopt, 0.01, false);
    CHECK(torch::equal(lo_a, lo_b));
    CHECK(torch::equal(hi_a, hi_b));
    // The range lies inside [0, 6], so the fake quant of x is the fake quant of relu6(x).
    CHECK(torch::equal(y, edgeqat::fake_quant_with_min_max_vars(
                              x.clamp(0.0, 6.0), lo_b.clamp_max(0.0), hi_b, 8, false)));
  }
  CHECK_THROWS_WITH(edgeqat::observe_fake_quant_(lo_a, hi_a, torch::randn({3}), std::nullopt, 1.0,
                                                 false, false, 8, false, 2.0, 1.0),
                    Catch::Contains("clamp_min must not exceed clamp_max, got clamp_min=2"));
}

}  // namespace
