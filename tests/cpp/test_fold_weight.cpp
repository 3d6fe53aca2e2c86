// Tests of edgeqat::fold_weight_fake_quant_ (ConvBn2d's weight path in one op) through the
// public C++ API, against the unfused ops it replaces (written here with
// edgeqat::observe_min_max_, the fake-quant ops and plain torch, as ConvBn2d ran them):
//  - forward output, observed state and grad_weight bit for bit; grad_factor (a per-channel
//    sum the op adds in double) within 1e-5 of the largest gradient;
//  - per channel and per tensor, symmetric or not, observing or not, un-folded or not, a
//    gamma = 0 channel, the first observation (state +inf / -inf) and an EMA step;
//  - errors name the argument and the value and leave the state untouched; double backward
//    is refused.
#include "catch_torch.h"

#include <limits>
#include <optional>
#include <vector>

#include "edgeqat/edgeqat.h"

namespace {

using Catch::Contains;
using torch::Tensor;

constexpr float kInf = std::numeric_limits<float>::infinity();

// Same shape, dtype and bits (signed zeros included; NaN in the same places).
bool same_bits(const Tensor& a, const Tensor& b) {
  if (!a.defined() || !b.defined() || a.sizes() != b.sizes() || a.dtype() != b.dtype()) {
    return false;
  }
  const auto ia = a.contiguous().view(torch::kInt32);
  const auto ib = b.contiguous().view(torch::kInt32);
  return torch::equal(ia, ib);
}

struct Case {
  bool per_channel, symmetric, narrow, observe, unfold;
  double c;  // averaging constant (1.0: last value)
};

// The unfused composition, as ConvBn2d ran it before the op existed.
Tensor unfused(Tensor& lo, Tensor& hi, const Tensor& w, const Tensor& f, const Case& k) {
  const auto wf = w * f.reshape({-1, 1, 1, 1});
  const std::optional<int64_t> axis = k.per_channel ? std::optional<int64_t>(0) : std::nullopt;
  if (k.observe) {
    edgeqat::observe_min_max_(lo, hi, wf.detach(), axis, k.c, false);
  }
  auto qlo = lo.clamp_max(0.0), qhi = hi.clamp_min(0.0);
  if (k.symmetric) {
    const auto bound = torch::maximum(-qlo, qhi);
    qlo = -bound;
    qhi = bound;
  }
  const auto wq =
      k.per_channel
          ? edgeqat::fake_quant_with_min_max_vars_per_channel(wf, qlo, qhi, 0, 8, k.narrow)
          : edgeqat::fake_quant_with_min_max_vars(wf, qlo, qhi, 8, k.narrow);
  if (!k.unfold) return wq;
  const auto zero = (f == 0).reshape({-1, 1, 1, 1});
  const auto safe = torch::where(zero, torch::ones({}), f.reshape({-1, 1, 1, 1}));
  return torch::where(zero, w, wq / safe);
}

}  // namespace

TEST_CASE("fold_weight_fake_quant_ is the unfused ops: output, state, grad_weight bit for bit",
          "[ops][fold_weight]") {
  torch::manual_seed(3);
  const int64_t C = 6;
  for (const bool per_channel : {true, false}) {
    for (const bool unfold : {false, true}) {
      for (const bool observe : {true, false}) {
        for (const bool symmetric : {true, false}) {
          const Case k{per_channel, symmetric, symmetric, observe, unfold, observe ? 0.25 : 1.0};
          const std::vector<int64_t> shape =
              per_channel ? std::vector<int64_t>{C} : std::vector<int64_t>{};
          // First step from "nothing observed" when observing; a known range otherwise.
          Tensor lo_r = observe ? torch::full(shape, kInf) : torch::full(shape, -0.6f);
          Tensor hi_r = observe ? torch::full(shape, -kInf) : torch::full(shape, 0.8f);
          Tensor lo = lo_r.clone(), hi = hi_r.clone();
          for (int step = 0; step < 2; ++step) {  // first observation, then an EMA step
            const auto w0 = torch::randn({C, 3, 3, 3}) * (step + 1);
            auto gamma = torch::randn({C});
            gamma[2] = 0.0;  // a gamma = 0 channel
            const auto f0 = gamma / torch::sqrt(torch::rand({C}) + 0.5);
            const auto w_r = w0.clone().requires_grad_(), f_r = f0.clone().requires_grad_();
            const auto w = w0.clone().requires_grad_(), f = f0.clone().requires_grad_();
            const auto want = unfused(lo_r, hi_r, w_r, f_r, k);
            const auto got = edgeqat::fold_weight_fake_quant_(
                lo, hi, w, f, observe, k.c, false, symmetric, 8, k.narrow, unfold);
            CHECK(same_bits(got, want));
            CHECK(torch::equal(lo, lo_r));  // +0 / -0 of a gamma = 0 channel compare equal
            CHECK(torch::equal(hi, hi_r));
            const auto g = torch::randn_like(want);
            want.backward(g);
            got.backward(g);
            CHECK(same_bits(w.grad(), w_r.grad()));
            const double scale = f_r.grad().abs().max().item<double>();
            CHECK(torch::allclose(f.grad(), f_r.grad(), 1e-5, 1e-5 * scale));
            if (unfold) {
              CHECK(same_bits(got[2], w0[2]));  // gamma = 0: the float weight
              CHECK(same_bits(w.grad()[2], g[2]));
              CHECK(f.grad()[2].item<float>() == 0.0f);
            }
          }
        }
      }
    }
  }
}

TEST_CASE("fold_weight_fake_quant_ errors name the argument and the value, state untouched",
          "[ops][fold_weight]") {
  const auto w = torch::randn({4, 2, 3, 3});
  const auto f = torch::rand({4}) + 0.5;
  auto lo = torch::full({4}, -1.0f), hi = torch::full({4}, 1.0f);
  const auto lo0 = lo.clone(), hi0 = hi.clone();
  CHECK_THROWS_WITH(edgeqat::fold_weight_fake_quant_(lo, hi, w, torch::rand({3}), true),
                    Contains("factor must be 1-D of length weight.size(0) = 4") &&
                        Contains("got shape [3]"));
  CHECK_THROWS_WITH(edgeqat::fold_weight_fake_quant_(lo, hi, w, f.to(torch::kDouble), true),
                    Contains("factor must have weight's dtype Float, got dtype Double"));
  CHECK_THROWS_WITH(
      edgeqat::fold_weight_fake_quant_(lo, hi, w, f, true, 1.0, false, false, 17),
      Contains("num_bits must be in [2, 16], got 17"));
  CHECK_THROWS_WITH(edgeqat::fold_weight_fake_quant_(lo, hi, w, f, true, 0.0),
                    Contains("averaging_constant must be in (0, 1], got 0"));
  auto short_lo = torch::full({3}, -1.0f), short_hi = torch::full({3}, 1.0f);
  CHECK_THROWS_WITH(edgeqat::fold_weight_fake_quant_(short_lo, short_hi, w, f, true),
                    Contains("observed_min must be 0-dim (per tensor) or 1-D of length "
                             "weight.size(0) = 4"));
  auto bad_w = w.clone();
  bad_w[1][0][0][0] = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_WITH(edgeqat::fold_weight_fake_quant_(lo, hi, bad_w, f, true),
                    Contains("edgeqat::fold_weight_fake_quant_: weight * factor contains 1 NaN "
                             "and 0 infinite value(s)"));
  auto inf_lo = lo.clone();
  inf_lo[3] = -kInf;
  CHECK_THROWS_WITH(edgeqat::fold_weight_fake_quant_(inf_lo, hi, w, f, false),
                    Contains("observed_min[3] = -inf and observed_max[3] = 1"));
  CHECK(torch::equal(lo, lo0));
  CHECK(torch::equal(hi, hi0));
}

TEST_CASE("fold_weight_fake_quant_ refuses a double backward", "[ops][fold_weight]") {
  const auto w = torch::randn({4, 2, 3, 3}).requires_grad_();
  const auto f = (torch::rand({4}) + 0.5).requires_grad_();
  auto lo = torch::full({4}, kInf), hi = torch::full({4}, -kInf);
  const auto y = edgeqat::fold_weight_fake_quant_(lo, hi, w, f, true, 1.0, false, true, 8, true,
                                                  true);
  CHECK_THROWS_WITH(torch::autograd::grad({y.sum()}, {w}, {}, true, /*create_graph=*/true),
                    Contains("double backward is not supported"));
  const auto grads = torch::autograd::grad({y.sum()}, {w, f});
  CHECK(grads[0].defined());
  CHECK(grads[1].defined());
}
