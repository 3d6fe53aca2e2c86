// Tests of edgeqat::observe_min_max_ through the public C++ API (no Python):
//  - a scalar reference written here (plain loops over the elements, the state
//    update as documented in csrc/ops/observe.cpp) independent of the library;
//  - first batch, exponential moving average, running (accumulated) min/max,
//    per tensor and per channel on every axis, partially observed channels;
//  - empty batches, float64 state, half inputs, strided inputs;
//  - argument errors, their messages, and the state left untouched by them;
//  - autograd: version counters, inputs that require grad, state that does.
//
// Every comparison is bit-exact: the reference computes each step in the
// state's dtype, as the documented formula new = old + c * (batch - old).
#include "catch_torch.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <utility>
#include <vector>

#include "edgeqat/edgeqat.h"


namespace {

using torch::Tensor;

constexpr double kInf = std::numeric_limits<double>::infinity();
const std::vector<std::optional<int64_t>> kAxesNoneAnd1 = {std::nullopt, 1};

// ---------------------------------------------------------------------------
// Scalar reference.
// ---------------------------------------------------------------------------

// One observer entry: T is the state dtype.
// averaging_constant 1.0 "keeps the last batch" (documented), exactly.
template <typename T>
void ref_update(T& lo, T& hi, T batch_lo, T batch_hi, double c, bool accumulate) {
  if (lo > hi || (!accumulate && c == 1.0)) {  // nothing observed yet, or last value
    lo = batch_lo;
    hi = batch_hi;
    return;
  }
  if (accumulate) {
    lo = std::min(lo, batch_lo);
    hi = std::max(hi, batch_hi);
    return;
  }
  // One rounding per operation, in T (volatile keeps the compiler from fusing).
  const T cc = static_cast<T>(c);
  volatile T dlo = static_cast<T>(batch_lo - lo);
  volatile T dhi = static_cast<T>(batch_hi - hi);
  volatile T slo = static_cast<T>(dlo * cc);
  volatile T shi = static_cast<T>(dhi * cc);
  lo = static_cast<T>(lo + slo);
  hi = static_cast<T>(hi + shi);
}

// Batch min / max of x (per tensor: one entry; per channel: x.size(axis)
// entries), by walking every element with its multi-index.
std::vector<std::pair<double, double>> ref_batch_range(const Tensor& x_in,
                                                       std::optional<int64_t> axis) {
  // float64 holds every float32 / half / bfloat16 value exactly.
  const Tensor x = x_in.to(torch::kDouble).contiguous();
  const int64_t nd = x.dim();
  int64_t ax = -1;
  if (axis) {
    ax = *axis < 0 ? *axis + nd : *axis;
  }
  const int64_t channels = axis ? x.size(ax) : 1;
  std::vector<std::pair<double, double>> out(channels, {kInf, -kInf});
  const double* data = x.data_ptr<double>();
  const int64_t n = x.numel();
  for (int64_t i = 0; i < n; ++i) {
    int64_t ch = 0;
    if (axis) {
      int64_t stride = 1;
      for (int64_t d = nd - 1; d > ax; --d) {
        stride *= x.size(d);
      }
      ch = (i / stride) % x.size(ax);
    }
    out[ch].first = std::min(out[ch].first, data[i]);
    out[ch].second = std::max(out[ch].second, data[i]);
  }
  return out;
}

// The reference update of (lo, hi), state dtype T, on copies.
template <typename T>
std::pair<Tensor, Tensor> ref_observe(const Tensor& lo_in, const Tensor& hi_in, const Tensor& x,
                                      std::optional<int64_t> axis, double c, bool accumulate) {
  Tensor lo = lo_in.clone().contiguous();
  Tensor hi = hi_in.clone().contiguous();
  if (x.numel() == 0) {
    return {lo, hi};
  }
  const auto batch = ref_batch_range(x, axis);
  T* pl = lo.data_ptr<T>();
  T* ph = hi.data_ptr<T>();
  for (size_t ch = 0; ch < batch.size(); ++ch) {
    ref_update<T>(pl[ch], ph[ch], static_cast<T>(batch[ch].first),
                  static_cast<T>(batch[ch].second), c, accumulate);
  }
  return {lo, hi};
}

bool bitwise_equal(const Tensor& a, const Tensor& b) {
  if (a.scalar_type() != b.scalar_type() || a.sizes() != b.sizes()) {
    return false;
  }
  const Tensor ac = a.contiguous(), bc = b.contiguous();
  return std::memcmp(ac.data_ptr(), bc.data_ptr(), ac.numel() * ac.element_size()) == 0;
}

Tensor unobserved_min(at::IntArrayRef shape, torch::Dtype dtype = torch::kFloat) {
  return torch::full(shape, kInf, torch::TensorOptions().dtype(dtype));
}
Tensor unobserved_max(at::IntArrayRef shape, torch::Dtype dtype = torch::kFloat) {
  return torch::full(shape, -kInf, torch::TensorOptions().dtype(dtype));
}

// Random batch whose channels along `axis` have different offsets and scales,
// so a per-channel range can't match a per-tensor one by chance.
Tensor random_batch(at::IntArrayRef shape, std::optional<int64_t> axis, int64_t seed) {
  torch::manual_seed(seed);
  Tensor x = torch::randn(shape);
  if (axis && x.dim() > 0) {
    const int64_t ax = *axis < 0 ? *axis + x.dim() : *axis;
    std::vector<int64_t> bshape(x.dim(), 1);
    bshape[ax] = x.size(ax);
    const Tensor ch = torch::arange(x.size(ax), torch::kFloat).reshape(bshape);
    x = x * (1 + ch) + 3 * ch - 2;
  }
  return x;
}

// Runs a sequence of batches through the op and the reference and compares
// the state after each.
template <typename T>
void check_sequence(Tensor lo, Tensor hi, const std::vector<Tensor>& batches,
                    std::optional<int64_t> axis, double c, bool accumulate) {
  for (size_t i = 0; i < batches.size(); ++i) {
    INFO("batch " << i << " shape " << batches[i].sizes() << " c " << c << " accumulate "
                  << accumulate);
    auto [want_lo, want_hi] = ref_observe<T>(lo, hi, batches[i], axis, c, accumulate);
    edgeqat::observe_min_max_(lo, hi, batches[i], axis, c, accumulate);
    INFO("got " << lo << " / " << hi << "; want " << want_lo << " / " << want_hi);
    REQUIRE(bitwise_equal(lo, want_lo));
    REQUIRE(bitwise_equal(hi, want_hi));
  }
}

}  // namespace

// ===========================================================================
// The reference itself, on hand-computed numbers.
// ===========================================================================

TEST_CASE("observe_min_max_: reference on hand-computed values", "[observe][reference]") {
  float lo = INFINITY, hi = -INFINITY;
  ref_update<float>(lo, hi, -2.f, 3.f, 0.5, false);  // first batch
  CHECK(lo == -2.f);
  CHECK(hi == 3.f);
  ref_update<float>(lo, hi, 0.f, 1.f, 0.5, false);  // -2 + 0.5 * 2, 3 + 0.5 * -2
  CHECK(lo == -1.f);
  CHECK(hi == 2.f);
  ref_update<float>(lo, hi, -0.5f, 5.f, 1.0, true);
  CHECK(lo == -1.f);
  CHECK(hi == 5.f);
  const auto r = ref_batch_range(torch::tensor({{1.f, -4.f, 2.f}, {7.f, 0.f, -1.f}}), 1);
  REQUIRE(r.size() == 3);
  CHECK(r[0] == std::make_pair(1.0, 7.0));
  CHECK(r[1] == std::make_pair(-4.0, 0.0));
  CHECK(r[2] == std::make_pair(-1.0, 2.0));
}

// ===========================================================================
// Hand-computed behaviour of the op.
// ===========================================================================

TEST_CASE("observe_min_max_: first batch sets the range then EMA then last value",
          "[observe]") {
  Tensor lo = unobserved_min({}), hi = unobserved_max({});
  edgeqat::observe_min_max_(lo, hi, torch::tensor({1.f, -2.f, 3.f}), std::nullopt, 0.25);
  CHECK(lo.item<float>() == -2.f);
  CHECK(hi.item<float>() == 3.f);
  // -2 + 0.25 * (2 - -2) = -1; 3 + 0.25 * (7 - 3) = 4
  edgeqat::observe_min_max_(lo, hi, torch::tensor({2.f, 7.f}), std::nullopt, 0.25);
  CHECK(lo.item<float>() == -1.f);
  CHECK(hi.item<float>() == 4.f);
  // Default averaging_constant 1.0: the last batch (exact here: -1 + 1.5, 4 - 3.25).
  edgeqat::observe_min_max_(lo, hi, torch::tensor({0.5f, 0.75f}));
  CHECK(lo.item<float>() == 0.5f);
  CHECK(hi.item<float>() == 0.75f);
}

// averaging_constant 1.0 keeps the last batch exactly: old + 1.0 * (batch - old)
// would round (state (-1000, 1000), x = {-0.1, 3.7} would give
// (-0.0999755859375, 3.70001220703125) in float32).
TEST_CASE("observe_min_max_: averaging_constant 1 keeps the last batch exactly",
          "[observe]") {
  for (const auto dtype : {torch::kFloat, torch::kDouble}) {
    for (const auto& axis : kAxesNoneAnd1) {
      const auto opts = torch::TensorOptions().dtype(dtype);
      const std::vector<int64_t> shape =
          axis ? std::vector<int64_t>{2} : std::vector<int64_t>{};
      Tensor lo = torch::full(shape, -1000.0, opts), hi = torch::full(shape, 1000.0, opts);
      const Tensor x = torch::tensor({-0.1, 3.7, 3.7, -0.1}, opts).reshape({2, 2});
      edgeqat::observe_min_max_(lo, hi, x, axis, 1.0);
      INFO("dtype " << dtype << " got " << lo << " / " << hi);
      CHECK(bitwise_equal(lo, torch::full(shape, -0.1, opts)));
      CHECK(bitwise_equal(hi, torch::full(shape, 3.7, opts)));
    }
  }
}

TEST_CASE("observe_min_max_: averaging_constant 1 keeps the last batch up to a rounding",
          "[observe]") {
  for (const auto& axis : kAxesNoneAnd1) {
    const std::vector<int64_t> shape = axis ? std::vector<int64_t>{5} : std::vector<int64_t>{};
    Tensor lo = unobserved_min(shape), hi = unobserved_max(shape);
    for (int i = 0; i < 5; ++i) {
      const Tensor x = random_batch({3, 5}, axis, 100 + i) * 10;
      edgeqat::observe_min_max_(lo, hi, x, axis, 1.0);
      auto [want_lo, want_hi] =
          ref_observe<float>(unobserved_min(shape), unobserved_max(shape), x, axis, 1.0, false);
      CHECK(torch::allclose(lo, want_lo, 0.0, 1e-5));
      CHECK(torch::allclose(hi, want_hi, 0.0, 1e-5));
    }
  }
}

TEST_CASE("observe_min_max_: accumulate keeps the running min and max", "[observe]") {
  Tensor lo = unobserved_min({}), hi = unobserved_max({});
  edgeqat::observe_min_max_(lo, hi, torch::tensor({0.f, 1.f}), std::nullopt, 1.0, true);
  edgeqat::observe_min_max_(lo, hi, torch::tensor({-3.f, 0.5f}), std::nullopt, 1.0, true);
  edgeqat::observe_min_max_(lo, hi, torch::tensor({0.25f, 2.f}), std::nullopt, 0.5, true);
  CHECK(lo.item<float>() == -3.f);
  CHECK(hi.item<float>() == 2.f);
}

TEST_CASE("observe_min_max_: per channel along axis 1", "[observe][per_channel]") {
  Tensor lo = unobserved_min({3}), hi = unobserved_max({3});
  const Tensor x = torch::tensor({{1.f, -4.f, 2.f}, {7.f, 0.f, -1.f}});
  edgeqat::observe_min_max_(lo, hi, x, 1);
  CHECK(torch::equal(lo, torch::tensor({1.f, -4.f, -1.f})));
  CHECK(torch::equal(hi, torch::tensor({7.f, 0.f, 2.f})));
  // Negative axis: the same dimension.
  edgeqat::observe_min_max_(lo, hi, torch::zeros({2, 3}), -1, 0.5);
  CHECK(torch::equal(lo, torch::tensor({0.5f, -2.f, -0.5f})));
  CHECK(torch::equal(hi, torch::tensor({3.5f, 0.f, 1.f})));
}

TEST_CASE("observe_min_max_: partially observed channels", "[observe][per_channel]") {
  // Channel 0 observed, channel 1 not (+inf / -inf), channel 2 observed.
  Tensor lo = torch::tensor({-1.f, INFINITY, 0.f});
  Tensor hi = torch::tensor({1.f, -INFINITY, 2.f});
  const Tensor x = torch::tensor({{3.f, 5.f, -2.f}, {1.f, 4.f, 0.f}});  // channels on axis 1
  edgeqat::observe_min_max_(lo, hi, x, 1, 0.5);
  CHECK(torch::equal(lo, torch::tensor({0.f, 4.f, -1.f})));
  CHECK(torch::equal(hi, torch::tensor({2.f, 5.f, 1.f})));
  REQUIRE(torch::isfinite(lo).all().item<bool>());
  REQUIRE(torch::isfinite(hi).all().item<bool>());
}

TEST_CASE("observe_min_max_: an empty batch changes nothing", "[observe]") {
  Tensor lo = torch::tensor(-1.f), hi = torch::tensor(2.f);
  edgeqat::observe_min_max_(lo, hi, torch::empty({0, 3}), std::nullopt, 0.5);
  CHECK(lo.item<float>() == -1.f);
  CHECK(hi.item<float>() == 2.f);
  Tensor ulo = unobserved_min({3}), uhi = unobserved_max({3});
  edgeqat::observe_min_max_(ulo, uhi, torch::empty({0, 3}), 1);
  CHECK(torch::equal(ulo, unobserved_min({3})));
  CHECK(torch::equal(uhi, unobserved_max({3})));
}

// ===========================================================================
// Reference sweeps.
// ===========================================================================

TEST_CASE("observe_min_max_: reference sweep per tensor and per channel on every axis",
          "[observe][reference]") {
  const std::vector<std::vector<int64_t>> shapes = {{7}, {3, 5}, {2, 3, 4}, {2, 3, 4, 5}};
  int64_t seed = 0;
  for (const auto& shape : shapes) {
    const auto nd = static_cast<int64_t>(shape.size());
    std::vector<std::optional<int64_t>> axes = {std::nullopt};
    // Per channel on 1-D x: see the test case below.
    for (int64_t a = -nd; a < nd && nd > 1; ++a) {
      axes.emplace_back(a);
    }
    for (const auto& axis : axes) {
      std::vector<Tensor> batches;
      for (int i = 0; i < 4; ++i) {
        batches.push_back(random_batch(shape, axis, ++seed));
      }
      const std::vector<int64_t> state_shape =
          axis ? std::vector<int64_t>{shape[*axis < 0 ? *axis + nd : *axis]}
               : std::vector<int64_t>{};
      INFO("shape " << at::IntArrayRef(shape) << " axis " << (axis ? *axis : 999));
      // c = 1.0 without accumulate: see "averaging_constant 1 keeps the last batch exactly".
      for (const double c : {0.001, 0.3, 0.75}) {
        check_sequence<float>(unobserved_min(state_shape), unobserved_max(state_shape), batches,
                              axis, c, false);
      }
      check_sequence<float>(unobserved_min(state_shape), unobserved_max(state_shape), batches,
                            axis, 1.0, true);
      check_sequence<double>(unobserved_min(state_shape, torch::kDouble),
                             unobserved_max(state_shape, torch::kDouble), batches, axis, 0.001,
                             false);
    }
  }
}

// Per channel on a 1-D x: every element is its own channel, as
// fake_quant_with_min_max_vars_per_channel accepts.
TEST_CASE("observe_min_max_: per channel on a 1-D x", "[observe][per_channel]") {
  const Tensor x = torch::tensor({1.f, -2.f, 3.f});
  for (const int64_t axis : {0, -1}) {
    Tensor lo = unobserved_min({3}), hi = unobserved_max({3});
    edgeqat::observe_min_max_(lo, hi, x, axis);
    CHECK(torch::equal(lo, x));
    CHECK(torch::equal(hi, x));
    check_sequence<float>(lo, hi, {x * 2, x - 1}, axis, 0.5, false);
  }
}

TEST_CASE("observe_min_max_: float64 and half inputs with float32 and float64 state",
          "[observe][reference]") {
  torch::manual_seed(11);
  std::vector<Tensor> batches;
  for (int i = 0; i < 3; ++i) {
    batches.push_back(torch::randn({4, 6}, torch::kDouble) * 10);
  }
  check_sequence<float>(unobserved_min({6}), unobserved_max({6}), batches, 1, 0.1, false);
  check_sequence<double>(unobserved_min({6}, torch::kDouble), unobserved_max({6}, torch::kDouble),
                         batches, 1, 0.1, false);
  std::vector<Tensor> half_batches;
  for (const auto& b : batches) {
    half_batches.push_back(b.to(torch::kHalf));
  }
  check_sequence<float>(unobserved_min({}), unobserved_max({}), half_batches, std::nullopt, 0.1,
                        false);
  check_sequence<double>(unobserved_min({4}, torch::kDouble), unobserved_max({4}, torch::kDouble),
                         half_batches, 0, 1.0, true);
}

TEST_CASE("observe_min_max_: strided and channels-last inputs", "[observe][reference]") {
  const Tensor base = random_batch({2, 6, 5, 4}, 1, 99);
  const std::vector<Tensor> inputs = {
      base.contiguous(at::MemoryFormat::ChannelsLast),
      base.transpose(1, 3),
      base.slice(2, 0, 5, 2),
  };
  for (const auto& x : inputs) {
    for (int64_t axis = 0; axis < x.dim(); ++axis) {
      INFO("strides " << x.strides() << " axis " << axis);
      const int64_t ch = x.size(axis);
      check_sequence<float>(unobserved_min({ch}), unobserved_max({ch}), {x, x * 0.5 - 1, x + 2},
                            axis, 0.25, false);
    }
    check_sequence<float>(unobserved_min({}), unobserved_max({}), {x, x * 3}, std::nullopt, 1.0,
                          true);
  }
}

// ===========================================================================
// Autograd.
// ===========================================================================

TEST_CASE("observe_min_max_: bumps the version of the state and accepts x requiring grad",
          "[observe][autograd]") {
  Tensor lo = unobserved_min({}), hi = unobserved_max({});
  const auto v_lo = lo._version(), v_hi = hi._version();
  const Tensor x = torch::randn({5}, torch::requires_grad());
  edgeqat::observe_min_max_(lo, hi, x);
  CHECK(lo._version() > v_lo);
  CHECK(hi._version() > v_hi);
  CHECK_FALSE(lo.requires_grad());
  CHECK_FALSE(hi.requires_grad());
  CHECK(lo.item<float>() == x.min().item<float>());
  CHECK(hi.item<float>() == x.max().item<float>());
}

TEST_CASE("observe_min_max_: state that requires grad is refused under grad mode",
          "[observe][autograd][errors]") {
  Tensor lo = torch::tensor(-1.f).requires_grad_(true);
  Tensor hi = torch::tensor(1.f);
  REQUIRE_THROWS_WITH(edgeqat::observe_min_max_(lo, hi, torch::tensor({5.f})),
                      Catch::Contains("must not require grad"));
  CHECK(lo.item<float>() == -1.f);
  CHECK(hi.item<float>() == 1.f);
  {
    torch::NoGradGuard no_grad;
    edgeqat::observe_min_max_(lo, hi, torch::tensor({5.f}));
  }
  CHECK(lo.item<float>() == 5.f);
  CHECK(hi.item<float>() == 5.f);
}

// ===========================================================================
// Argument errors: message, and the state is left as it was.
// ===========================================================================

namespace {

void check_unchanged(const Tensor& lo, const Tensor& hi, const Tensor& lo0, const Tensor& hi0) {
  CHECK(bitwise_equal(lo, lo0));
  CHECK(bitwise_equal(hi, hi0));
}

}  // namespace

TEST_CASE("observe_min_max_: errors: averaging_constant outside 0 to 1", "[observe][errors]") {
  Tensor lo = torch::tensor(-1.f), hi = torch::tensor(1.f);
  const Tensor lo0 = lo.clone(), hi0 = hi.clone();
  const Tensor x = torch::randn({4});
  REQUIRE_THROWS_AS(edgeqat::observe_min_max_(lo, hi, x, std::nullopt, 0.0), c10::Error);
  REQUIRE_THROWS_WITH(edgeqat::observe_min_max_(lo, hi, x, std::nullopt, 0.0),
                      Catch::Contains("edgeqat::observe_min_max_: averaging_constant must be in "
                                      "(0, 1], got 0"));
  REQUIRE_THROWS_WITH(edgeqat::observe_min_max_(lo, hi, x, std::nullopt, 1.5),
                      Catch::Contains("averaging_constant must be in (0, 1], got 1.5"));
  REQUIRE_THROWS_WITH(edgeqat::observe_min_max_(lo, hi, x, std::nullopt, -0.25),
                      Catch::Contains("averaging_constant must be in (0, 1], got -0.25"));
  REQUIRE_THROWS_WITH(edgeqat::observe_min_max_(lo, hi, x, std::nullopt, std::nan("")),
                      Catch::Contains("averaging_constant must be in (0, 1], got nan"));
  check_unchanged(lo, hi, lo0, hi0);
}

TEST_CASE("observe_min_max_: errors: state shapes", "[observe][errors]") {
  const Tensor x = torch::randn({3, 4});
  Tensor lo = unobserved_min({4}), hi = unobserved_max({4});
  Tensor slo = unobserved_min({}), shi = unobserved_max({});
  REQUIRE_THROWS_WITH(
      edgeqat::observe_min_max_(lo, hi, x, 0),
      Catch::Contains("running_min must be 1-D of length x.size(0) = 3, got shape [4]"));
  REQUIRE_THROWS_WITH(
      edgeqat::observe_min_max_(slo, shi, x, -1),
      Catch::Contains("running_min must be 1-D of length x.size(1) = 4, got shape []"));
  Tensor lo1 = unobserved_min({4});
  Tensor hi2 = unobserved_max({2, 2});
  REQUIRE_THROWS_WITH(
      edgeqat::observe_min_max_(lo1, hi2, x, 1),
      Catch::Contains("running_max must be 1-D of length x.size(1) = 4, got shape [2, 2]"));
  REQUIRE_THROWS_WITH(edgeqat::observe_min_max_(lo, hi, x),
                      Catch::Contains("running_min must be a 0-dim tensor, got shape [4]"));
  Tensor hi1 = unobserved_max({1});
  REQUIRE_THROWS_WITH(edgeqat::observe_min_max_(slo, hi1, x),
                      Catch::Contains("running_max must be a 0-dim tensor, got shape [1]"));
  Tensor ilo = torch::zeros({}, torch::kInt), ihi = torch::zeros({}, torch::kInt);
  REQUIRE_THROWS_WITH(
      edgeqat::observe_min_max_(ilo, ihi, x),
      Catch::Contains("running_min must be a floating-point tensor, got dtype Int"));
  check_unchanged(lo, hi, unobserved_min({4}), unobserved_max({4}));
  check_unchanged(slo, shi, unobserved_min({}), unobserved_max({}));
  check_unchanged(lo1, hi2, unobserved_min({4}), unobserved_max({2, 2}));
}

TEST_CASE("observe_min_max_: errors: axis out of range", "[observe][errors]") {
  Tensor lo = unobserved_min({3}), hi = unobserved_max({3});
  REQUIRE_THROWS_WITH(edgeqat::observe_min_max_(lo, hi, torch::randn({3, 3}), 2),
                      Catch::Contains("axis 2 is out of range for x with 2 dimension(s)"));
  REQUIRE_THROWS_WITH(edgeqat::observe_min_max_(lo, hi, torch::randn({3, 3}), -3),
                      Catch::Contains("axis -3 is out of range for x with 2 dimension(s)"));
  REQUIRE_THROWS_WITH(edgeqat::observe_min_max_(lo, hi, torch::tensor(1.f), 0),
                      Catch::Contains("axis 0 is out of range for x with 0 dimension(s)"));
  check_unchanged(lo, hi, unobserved_min({3}), unobserved_max({3}));
}

TEST_CASE("observe_min_max_: errors: integer x and non-finite x", "[observe][errors]") {
  Tensor lo = torch::tensor({-1.f, 0.f}), hi = torch::tensor({1.f, 2.f});
  const Tensor lo0 = lo.clone(), hi0 = hi.clone();
  REQUIRE_THROWS_WITH(edgeqat::observe_min_max_(lo, hi, torch::ones({2, 2}, torch::kInt), 0),
                      Catch::Contains("x must be a floating-point tensor, got dtype Int"));
  // A NaN in channel 1 only: channel 0 must not be updated either.
  const Tensor x_nan = torch::tensor({{-5.f, 1.f}, {5.f, std::nanf("")}});
  REQUIRE_THROWS_WITH(edgeqat::observe_min_max_(lo, hi, x_nan, 1),
                      Catch::Contains("x contains 1 NaN and 0 infinite value(s)"));
  const Tensor x_inf = torch::tensor({{-INFINITY, 1.f}, {5.f, INFINITY}});
  REQUIRE_THROWS_WITH(edgeqat::observe_min_max_(lo, hi, x_inf, 1, 1.0, true),
                      Catch::Contains("x contains 0 NaN and 2 infinite value(s)"));
  Tensor slo = torch::tensor(-1.f), shi = torch::tensor(1.f);
  const Tensor x64 = torch::tensor({std::nan(""), kInf, 0.0}, torch::kDouble);
  REQUIRE_THROWS_WITH(edgeqat::observe_min_max_(slo, shi, x64),
                      Catch::Contains("x contains 1 NaN and 1 infinite value(s)"));
  check_unchanged(lo, hi, lo0, hi0);
  CHECK(slo.item<float>() == -1.f);
  CHECK(shi.item<float>() == 1.f);
}
