// Tests of the LibTorch QAT modules (edgeqat::nn) through the public C++ API:
//  - QuantSpec / QConfig: Python's defaults and validation messages;
//  - FakeQuantizer: state and names, every mode against a reference made of
//    the ops and scalar float arithmetic written here;
//  - QuantLinear, QuantConv2d, ConvBn2d, QuantAdd, Residual: forward and
//    gradients against references composed from the ops and plain torch,
//    bit for bit (same ops in the same order, so no tolerance), except
//    ConvBn2d's gamma gradient (a sum added in another order; 1e-5);
//  - ConvBn2d after freeze_bn is conv(x, fq(W'), b') with the folded weight
//    and bias; gamma = 0 gives no NaN;
//  - names are Python's (the C++ / Python parity itself is tested by
//    tests/python/test_cpp_parity.py);
//  - model controls, a small QAT model that learns, torch::save / torch::load
//    mid-training (model and optimizer) continuing identically, clone;
//  - argument errors name the argument and its value.
#include "catch_torch.h"

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <set>
#include <string>
#include <vector>

#include "edgeqat/edgeqat.h"
#include "nn_test_model.h"

namespace {

namespace qnn = edgeqat::nn;
using Catch::Contains;
using torch::Tensor;

constexpr float kInf = std::numeric_limits<float>::infinity();

// Same shape, dtype and values (bit for bit for floats; NaN never equal).
bool same(const Tensor& a, const Tensor& b) {
  return a.defined() && b.defined() && a.sizes() == b.sizes() && a.dtype() == b.dtype() &&
         torch::equal(a, b);
}

std::set<std::string> keys_of(const torch::OrderedDict<std::string, Tensor>& dict) {
  std::set<std::string> keys;
  for (const auto& item : dict) keys.insert(item.key());
  return keys;
}

// The default weight quantization (per output channel on dim 0, symmetric,
// narrow range, 8 bits) of the range of w, written with plain torch + the op.
Tensor ref_weight_fq(const Tensor& w) {
  const auto flat = w.detach().reshape({w.size(0), -1});
  const auto lo = std::get<0>(flat.min(1)).clamp_max(0.0);
  const auto hi = std::get<0>(flat.max(1)).clamp_min(0.0);
  const auto bound = torch::maximum(-lo, hi);
  return edgeqat::fake_quant_with_min_max_vars_per_channel(w, -bound, bound, 0, 8, true);
}

// The default activation quantization (per tensor, asymmetric, 8 bits) with
// the range [lo, hi] widened to contain 0.
Tensor ref_act_fq(const Tensor& x, float lo, float hi) {
  return edgeqat::fake_quant_with_min_max_vars(x, torch::tensor(std::min(lo, 0.0f)),
                                               torch::tensor(std::max(hi, 0.0f)), 8, false);
}

float min_of(const Tensor& t) { return t.min().item<float>(); }
float max_of(const Tensor& t) { return t.max().item<float>(); }

// One EMA step in float, one rounding per operation (the documented update
// new = old + c * (batch - old)).
float ema(float old, float batch, double c) {
  volatile float d = batch - old;
  volatile float s = d * static_cast<float>(c);
  return old + s;
}

void fill_uniform(const Tensor& t, double lo, double hi) {
  torch::NoGradGuard no_grad;
  t.uniform_(lo, hi);
}

}  // namespace

// ---------------------------------------------------------------------------
// Config
// ---------------------------------------------------------------------------

TEST_CASE("QuantSpec and QConfig have Python's defaults", "[nn][config]") {
  const qnn::QuantSpec spec;
  CHECK(spec.num_bits() == 8);
  CHECK_FALSE(spec.narrow_range());
  CHECK_FALSE(spec.symmetric());
  CHECK_FALSE(spec.per_channel());
  CHECK(spec.axis() == 0);
  CHECK(spec.range_source() == qnn::RangeSource::Ema);
  CHECK(spec.ema_decay() == 0.999);
  CHECK(spec.averaging_constant() == 1.0 - 0.999);

  const qnn::QConfig cfg;
  const auto& w = cfg.weight();
  CHECK(w.num_bits() == 8);
  CHECK(w.narrow_range());
  CHECK(w.symmetric());
  CHECK(w.per_channel());
  CHECK(w.axis() == 0);
  CHECK(w.range_source() == qnn::RangeSource::Last);
  CHECK(w.averaging_constant() == 1.0);
  CHECK(cfg.activation() == qnn::QuantSpec());
  CHECK(cfg.activation() == qnn::QConfig::default_activation());
  CHECK_FALSE(cfg.schedule().has_value());

  CHECK(qnn::QuantSpec().range_source("running").range_source() == qnn::RangeSource::Running);
  CHECK(qnn::QuantSpec().range_source("running").averaging_constant() == 1.0);
  CHECK(qnn::QuantSpec().range_source("last") != qnn::QuantSpec());
  // Chained setters make a modified copy, as Python's replace().
  const auto w4 = qnn::QConfig::default_weight().num_bits(4);
  CHECK(w4.num_bits() == 4);
  CHECK(w4.per_channel());
  CHECK(qnn::QConfig().weight(w4).weight().num_bits() == 4);
}

TEST_CASE("QuantSpec and QConfig reject bad values, naming the field and the value",
          "[nn][config][errors]") {
  CHECK_THROWS_WITH(qnn::QuantSpec().num_bits(17),
                    Contains("QuantSpec.num_bits must be an int in [2, 16], got 17"));
  CHECK_THROWS_WITH(qnn::QuantSpec().num_bits(1), Contains("got 1"));
  CHECK_THROWS_WITH(qnn::QuantSpec().ema_decay(1.0),
                    Contains("QuantSpec.ema_decay must be in [0, 1), got 1"));
  CHECK_THROWS_WITH(qnn::QuantSpec().ema_decay(-0.5), Contains("got -0.5"));
  CHECK_THROWS_WITH(qnn::QuantSpec().ema_decay(std::nan("")), Contains("ema_decay"));
  CHECK_THROWS_WITH(qnn::QuantSpec().range_source("max"),
                    Contains("QuantSpec.range_source must be 'last', 'ema', 'running' or "
                             "'histogram', got 'max'"));
  CHECK_THROWS_WITH(qnn::QConfig().activation(qnn::QuantSpec().per_channel(true)),
                    Contains("QConfig.activation.per_channel must be false"));
  CHECK_THROWS_AS(qnn::QuantSpec().num_bits(0), c10::ValueError);
  // A failed setter leaves the value as it was.
  qnn::QuantSpec spec;
  CHECK_THROWS(spec.num_bits(99));
  CHECK(spec.num_bits() == 8);
}

// ---------------------------------------------------------------------------
// FakeQuantizer
// ---------------------------------------------------------------------------

TEST_CASE("FakeQuantizer: Python's names, shapes and initial state", "[nn][quantizer]") {
  qnn::FakeQuantizer per_tensor{qnn::QuantSpec()};
  CHECK(keys_of(per_tensor->named_parameters()) ==
        std::set<std::string>{"learned_min", "learned_max"});
  CHECK(keys_of(per_tensor->named_buffers()) ==
        std::set<std::string>{"observed_min", "observed_max", "mode_code"});
  CHECK(per_tensor->observed_min.dim() == 0);
  CHECK(per_tensor->observed_min.item<float>() == kInf);
  CHECK(per_tensor->observed_max.item<float>() == -kInf);
  CHECK(per_tensor->mode_code.scalar_type() == torch::kUInt8);
  CHECK(per_tensor->mode() == qnn::Mode::Observe);
  CHECK(per_tensor->learned_min.requires_grad());
  CHECK_FALSE(per_tensor->has_range());

  qnn::FakeQuantizer per_channel(qnn::QConfig::default_weight(), 5, qnn::Mode::Off);
  CHECK(per_channel->observed_min.sizes() == torch::IntArrayRef{5});
  CHECK(per_channel->learned_max.sizes() == torch::IntArrayRef{5});
  CHECK(per_channel->mode() == qnn::Mode::Off);
  CHECK(per_channel->mode_code.item<int>() == 3);
}

TEST_CASE("FakeQuantizer observes in training mode only, then quantizes with the observed range",
          "[nn][quantizer]") {
  torch::manual_seed(1);
  qnn::FakeQuantizer q{qnn::QuantSpec()};  // EMA, decay 0.999
  const auto x1 = torch::randn({4, 6}) + 0.5;
  const auto x2 = 3.0 * torch::randn({4, 6});

  // First batch sets the range.
  auto y1 = q(x1);
  float lo = min_of(x1), hi = max_of(x1);
  CHECK(q->observed_min.item<float>() == lo);
  CHECK(q->observed_max.item<float>() == hi);
  CHECK(same(y1, ref_act_fq(x1, lo, hi)));

  // Then the moving average.
  auto y2 = q(x2);
  lo = ema(lo, min_of(x2), 1.0 - 0.999);
  hi = ema(hi, max_of(x2), 1.0 - 0.999);
  CHECK(q->observed_min.item<float>() == lo);
  CHECK(q->observed_max.item<float>() == hi);
  CHECK(same(y2, ref_act_fq(x2, lo, hi)));

  // Eval mode: no update.
  q->eval();
  auto y3 = q(5.0 * x2);
  CHECK(q->observed_min.item<float>() == lo);
  CHECK(same(y3, ref_act_fq(5.0 * x2, lo, hi)));

  // Frozen: no update in training mode either.
  q->train();
  q->freeze();
  CHECK(q->mode() == qnn::Mode::Frozen);
  q(10.0 * x2);
  CHECK(q->observed_max.item<float>() == hi);

  // Off: identity, the very tensor.
  q->disable();
  const auto x3 = torch::randn({3});
  CHECK(q(x3).is_same(x3));

  // Running: all-time min / max.
  qnn::FakeQuantizer running{qnn::QuantSpec().range_source("running")};
  running(x1);
  running(x2);
  CHECK(running->observed_min.item<float>() == std::min(min_of(x1), min_of(x2)));
  CHECK(running->observed_max.item<float>() == std::max(max_of(x1), max_of(x2)));

  // Last value, symmetric, narrow range, 4 bits.
  qnn::FakeQuantizer last{
      qnn::QuantSpec().range_source("last").symmetric(true).narrow_range(true).num_bits(4)};
  last(x1);
  auto y = last(x2);
  CHECK(last->observed_min.item<float>() == min_of(x2));
  const auto bound = torch::tensor(std::max(-min_of(x2), max_of(x2)));
  CHECK(same(y, edgeqat::fake_quant_with_min_max_vars(x2, -bound, bound, 4, true)));
  const auto [rlo, rhi] = last->observed_range();
  CHECK(rlo.item<float>() == -bound.item<float>());
  CHECK(rhi.item<float>() == bound.item<float>());
}

TEST_CASE("FakeQuantizer: a positive-only range is widened to contain 0", "[nn][quantizer]") {
  qnn::FakeQuantizer q{qnn::QuantSpec()};
  const auto x = torch::linspace(1.0, 2.0, 11);
  const auto y = q(x);
  CHECK(q->observed_min.item<float>() == 1.0f);  // the state keeps the data's range
  const auto [lo, hi] = q->observed_range();
  CHECK(lo.item<float>() == 0.0f);
  CHECK(hi.item<float>() == 2.0f);
  CHECK(same(y, ref_act_fq(x, 0.0f, 2.0f)));
}

TEST_CASE("FakeQuantizer per channel observes and quantizes each slice along the axis",
          "[nn][quantizer]") {
  torch::manual_seed(2);
  auto spec = qnn::QConfig::default_weight().axis(1);
  qnn::FakeQuantizer q(spec, 3);
  const auto x = torch::randn({4, 3, 5});
  const auto y = q(x);
  const auto per = x.transpose(0, 1).reshape({3, -1});
  CHECK(same(q->observed_min, std::get<0>(per.min(1))));
  CHECK(same(q->observed_max, std::get<0>(per.max(1))));
  const auto bound =
      torch::maximum(-std::get<0>(per.min(1)).clamp_max(0), std::get<0>(per.max(1)).clamp_min(0));
  CHECK(same(y, edgeqat::fake_quant_with_min_max_vars_per_channel(x, -bound, bound, 1, 8, true)));
}

TEST_CASE("FakeQuantizer learn(): ranges start from the observed ones and receive gradients",
          "[nn][quantizer]") {
  torch::manual_seed(3);
  qnn::FakeQuantizer q{qnn::QuantSpec()};
  const auto x = torch::randn({64});
  q(x);
  const auto [olo, ohi] = q->observed_range();
  q->learn();
  CHECK(q->mode() == qnn::Mode::Learn);
  CHECK(same(q->learned_min.detach(), olo));
  CHECK(same(q->learned_max.detach(), ohi));

  // Narrow the learned range: values outside it send gradient to min / max.
  {
    torch::NoGradGuard no_grad;
    q->learned_min.mul_(0.5);
    q->learned_max.mul_(0.5);
  }
  const auto before = q->observed_min.clone();
  const auto xs = 2.0 * x;
  auto y = q(xs);
  CHECK(same(q->observed_min, before));  // learn mode does not observe
  CHECK(same(y, edgeqat::fake_quant_with_min_max_vars(xs, q->learned_min.detach(),
                                                      q->learned_max.detach(), 8, false)));
  y.sum().backward();
  CHECK(q->learned_min.grad().item<float>() > 0.0f);  // sum of g below the range
  CHECK(q->learned_max.grad().item<float>() > 0.0f);

  // A second learn() keeps the learned values (no re-initialisation).
  {
    torch::NoGradGuard no_grad;
    q->learned_max.fill_(0.25);
  }
  q->learn();
  CHECK(q->learned_max.item<float>() == 0.25f);
  // Crossed ends: a one-point range, not an error.
  {
    torch::NoGradGuard no_grad;
    q->learned_min.fill_(0.5);
  }
  const auto [llo, lhi] = q->learned_range();
  CHECK(llo.item<float>() == 0.5f);
  CHECK(lhi.item<float>() == 0.5f);

  // Symmetric: [-|learned_max|, |learned_max|].
  qnn::FakeQuantizer sym{qnn::QuantSpec().symmetric(true)};
  sym(x);
  sym->learn();
  {
    torch::NoGradGuard no_grad;
    sym->learned_max.fill_(-0.75);
  }
  const auto [slo, shi] = sym->learned_range();
  CHECK(slo.item<float>() == -0.75f);
  CHECK(shi.item<float>() == 0.75f);
  const auto [qlo, qhi] = sym->quant_range();
  CHECK_FALSE(qlo.requires_grad());
  CHECK(qhi.item<float>() == 0.75f);
}

TEST_CASE("FakeQuantizer errors name the quantizer, the argument and the value",
          "[nn][quantizer][errors]") {
  CHECK_THROWS_WITH(qnn::FakeQuantizer(qnn::QuantSpec(), std::nullopt, qnn::Mode::Learn),
                    Contains("mode=Mode::Learn needs an observed range"));
  CHECK_THROWS_WITH(qnn::FakeQuantizer(qnn::QConfig::default_weight()),
                    Contains("channels must be a positive int for a per-channel spec, got none"));
  CHECK_THROWS_WITH(qnn::FakeQuantizer(qnn::QConfig::default_weight(), 0),
                    Contains("channels must be a positive int for a per-channel spec, got 0"));

  qnn::FakeQuantizer q{qnn::QuantSpec()};
  q->eval();
  CHECK_THROWS_WITH(q(torch::ones({2})),
                    Contains("FakeQuantizer(per-tensor, 8 bits) has no observed range yet"));
  CHECK_THROWS_WITH(q->learn(), Contains("has no observed range yet"));
  CHECK(q->mode() == qnn::Mode::Observe);  // the failed learn() changed nothing

  q->mode_code.fill_(7);  // as a corrupt file would load it
  CHECK_THROWS_WITH(q->mode(), Contains("mode_code must be a Mode"));
  CHECK_THROWS_WITH(q->mode(), Contains("got 7"));
}

// ---------------------------------------------------------------------------
// QuantLinear, QuantConv2d
// ---------------------------------------------------------------------------

TEST_CASE("QuantLinear is linear with the per-channel fake-quantized weight, forward and backward",
          "[nn][linear]") {
  torch::manual_seed(4);
  qnn::QuantLinear fc(6, 3);
  CHECK(keys_of(fc->named_parameters()) == std::set<std::string>{"weight", "bias",
                                                                 "weight_quant.learned_min",
                                                                 "weight_quant.learned_max"});
  CHECK(fc->weight.sizes() == torch::IntArrayRef({3, 6}));
  const auto x = torch::randn({5, 6}, torch::requires_grad());
  auto y = fc(x);

  const auto w = fc->weight.detach().clone().requires_grad_();
  const auto b = fc->bias.detach().clone().requires_grad_();
  const auto xr = x.detach().clone().requires_grad_();
  auto yr = torch::linear(xr, ref_weight_fq(w), b);
  CHECK(same(y, yr));

  const auto g = torch::randn_like(y);
  y.backward(g);
  yr.backward(g);
  CHECK(same(fc->weight.grad(), w.grad()));
  CHECK(same(fc->bias.grad(), b.grad()));
  CHECK(same(x.grad(), xr.grad()));
  // The last-value weight range is the weight's.
  CHECK(same(fc->weight_quant->observed_max, std::get<0>(fc->weight.detach().max(1))));

  qnn::QuantLinear no_bias(qnn::QuantLinearOptions(6, 3).bias(false));
  CHECK_FALSE(no_bias->bias.defined());
  CHECK(keys_of(no_bias->named_parameters()).count("bias") == 0);
  const auto x2 = torch::randn({2, 7, 6});  // any leading dims
  CHECK(same(no_bias(x2), torch::linear(x2, ref_weight_fq(no_bias->weight.detach()))));
}

TEST_CASE("QuantLinear initialises like torch::nn::Linear", "[nn][linear]") {
  torch::manual_seed(5);
  torch::nn::Linear plain(10, 4);
  torch::manual_seed(5);
  qnn::QuantLinear q(10, 4);
  CHECK(same(q->weight.detach(), plain->weight.detach()));
  CHECK(same(q->bias.detach(), plain->bias.detach()));
}

TEST_CASE("QuantConv2d: any geometry, against conv2d with the fake-quantized weight",
          "[nn][conv]") {
  torch::manual_seed(6);
  struct Case {
    qnn::QuantConv2dOptions options;
    torch::nn::Conv2dOptions plain;
  };
  const std::vector<Case> cases = {
      {qnn::QuantConv2dOptions(4, 6, 3), torch::nn::Conv2dOptions(4, 6, 3)},
      {qnn::QuantConv2dOptions(4, 4, 3).stride(2).padding(1).groups(4).bias(false),
       torch::nn::Conv2dOptions(4, 4, 3).stride(2).padding(1).groups(4).bias(false)},
      {qnn::QuantConv2dOptions(4, 8, {3, 1})
           .padding(torch::ExpandingArray<2>({2, 0}))
           .dilation(2)
           .groups(2),
       torch::nn::Conv2dOptions(4, 8, {3, 1})
           .padding(torch::ExpandingArray<2>({2, 0}))
           .dilation(2)
           .groups(2)},
      {qnn::QuantConv2dOptions(4, 2, 3).padding(torch::kSame),
       torch::nn::Conv2dOptions(4, 2, 3).padding(torch::kSame)},
      {qnn::QuantConv2dOptions(4, 2, 2).padding(torch::kValid).stride({1, 2}),
       torch::nn::Conv2dOptions(4, 2, 2).padding(torch::kValid).stride({1, 2})},
  };
  for (const auto& c : cases) {
    qnn::QuantConv2d conv(c.options);
    torch::nn::Conv2d plain(c.plain);
    {
      torch::NoGradGuard no_grad;
      plain->weight.copy_(ref_weight_fq(conv->weight.detach()));
      if (c.options.bias()) plain->bias.copy_(conv->bias);
    }
    const auto x = torch::randn({2, 4, 9, 8}, torch::requires_grad());
    const auto y = conv(x);
    CHECK(same(y, plain(x)));
    CHECK(same(conv(x[0]), plain(x[0])));  // unbatched input

    const auto w = conv->weight.detach().clone().requires_grad_();
    const auto xr = x.detach().clone().requires_grad_();
    auto yr =
        torch::nn::functional::conv2d(xr, ref_weight_fq(w),
                                      torch::nn::functional::Conv2dFuncOptions()
                                          .bias(c.options.bias() ? conv->bias.detach() : Tensor())
                                          .stride(c.plain.stride())
                                          .padding(c.plain.padding())
                                          .dilation(c.plain.dilation())
                                          .groups(c.plain.groups()));
    CHECK(same(y, yr));
    const auto g = torch::randn_like(y);
    y.backward(g);
    yr.backward(g);
    CHECK(same(conv->weight.grad(), w.grad()));
    CHECK(same(x.grad(), xr.grad()));
  }
}

// ---------------------------------------------------------------------------
// ConvBn2d
// ---------------------------------------------------------------------------

namespace {

// A ConvBn2d with non-trivial BN parameters and running statistics.
qnn::ConvBn2d make_conv_bn(const qnn::ConvBn2dOptions& options) {
  qnn::ConvBn2d m(options);
  fill_uniform(m->bn->weight, 0.5, 1.5);
  fill_uniform(m->bn->bias, -0.5, 0.5);
  fill_uniform(m->bn->running_mean, -0.2, 0.2);
  fill_uniform(m->bn->running_var, 0.5, 2.0);
  return m;
}

Tensor activation_ref(const Tensor& y, qnn::Activation a) {
  if (a == qnn::Activation::ReLU) return torch::relu(y);
  if (a == qnn::Activation::ReLU6) return torch::clamp(y, 0.0, 6.0);
  return y;
}

}  // namespace

TEST_CASE("ConvBn2d in training: conv with fq(W * f) / f and the bias, then BN on batch statistics",
          "[nn][convbn]") {
  torch::manual_seed(7);
  const std::vector<qnn::ConvBn2dOptions> cases = {
      qnn::ConvBn2dOptions(3, 4, 3).padding(1).activation("relu"),
      qnn::ConvBn2dOptions(4, 4, 3).stride(2).groups(4).bias(true).activation("relu6"),
      qnn::ConvBn2dOptions(3, 2, 1).momentum(std::nullopt).eps(1e-3),  // cumulative average
  };
  for (const auto& o : cases) {
    auto m = make_conv_bn(o);
    for (int step = 0; step < 3; ++step) {
      const auto x = torch::randn({4, o.in_channels(), 6, 6});
      const auto gamma = m->bn->weight.detach().clone().requires_grad_();
      const auto beta = m->bn->bias.detach().clone().requires_grad_();
      const auto w = m->weight.detach().clone().requires_grad_();
      auto mean = m->bn->running_mean.clone();
      auto var = m->bn->running_var.clone();

      const auto y = m(x);

      // Reference: plain torch + the op.
      const auto f = gamma / torch::sqrt(var + o.eps());
      const auto wq = ref_weight_fq(w * f.reshape({-1, 1, 1, 1}));
      namespace F = torch::nn::functional;
      auto conv_options = F::Conv2dFuncOptions()
                              .stride(o.stride())
                              .padding(std::get<torch::ExpandingArray<2>>(o.padding()))
                              .groups(o.groups());
      if (o.bias()) conv_options = conv_options.bias(m->bias.detach());
      auto z = F::conv2d(x, wq / f.reshape({-1, 1, 1, 1}), conv_options);
      const double momentum = o.momentum() ? *o.momentum() : 1.0 / (step + 1);
      z = torch::batch_norm(z, gamma, beta, mean, var, /*training=*/true, momentum, o.eps(), false);
      const auto yr = activation_ref(z, o.activation());

      CHECK(same(y, yr));
      CHECK(same(m->bn->running_mean, mean));
      CHECK(same(m->bn->running_var, var));
      CHECK(m->bn->num_batches_tracked.item<int64_t>() == step + 1);

      const auto g = torch::randn_like(y);
      y.backward(g);
      yr.backward(g);
      CHECK(same(m->weight.grad(), w.grad()));
      // gamma: the fold factor's part is a per-channel sum that fold_weight_fake_quant_ adds
      // in double and autograd in float, in another order (same terms): not bit for bit.
      const double scale = gamma.grad().abs().max().item<double>();
      CHECK(torch::allclose(m->bn->weight.grad(), gamma.grad(), 1e-5, 1e-5 * scale));
      CHECK(same(m->bn->bias.grad(), beta.grad()));
      m->zero_grad();
    }
  }
}

TEST_CASE(
    "ConvBn2d after freeze_bn (and in eval mode) is conv(x, fq(W'), b') with the folded "
    "weight and bias",
    "[nn][convbn]") {
  torch::manual_seed(8);
  for (const bool bias : {false, true}) {
    auto m = make_conv_bn(
        qnn::ConvBn2dOptions(3, 5, 3).padding(1).bias(bias).activation(qnn::Activation::ReLU6));
    m(torch::randn({4, 3, 6, 6}));  // a few BN steps so the statistics move
    m(torch::randn({4, 3, 6, 6}));
    m->freeze_bn();
    CHECK(m->is_bn_frozen());
    const auto mean = m->bn->running_mean.clone();
    const auto var = m->bn->running_var.clone();
    const auto nbt = m->bn->num_batches_tracked.clone();

    const auto x = torch::randn({2, 3, 6, 6});
    const auto y = m(x);  // training mode, BN frozen
    CHECK(same(m->bn->running_mean, mean));
    CHECK(same(m->bn->running_var, var));
    CHECK(same(m->bn->num_batches_tracked, nbt));

    const auto [w_fold, b_fold] = m->folded_weight_and_bias();
    CHECK_FALSE(w_fold.requires_grad());
    // The weight quantizer saw exactly W' this step (last-value range).
    const auto [lo, hi] = m->weight_quant->quant_range();
    const auto wq = edgeqat::fake_quant_with_min_max_vars_per_channel(w_fold, lo, hi, 0, 8, true);
    CHECK(same(wq, ref_weight_fq(w_fold)));
    // conv with the folded weight and bias, fake-quantized the same way: the int8 graph.
    const auto expected =
        torch::clamp(torch::nn::functional::conv2d(
                         x, wq, torch::nn::functional::Conv2dFuncOptions().bias(b_fold).padding(1)),
                     0.0, 6.0);
    CHECK(same(y, expected));
    // Eval mode (not frozen) computes the same graph.
    m->unfreeze_bn();
    m->eval();
    CHECK(same(m(x), expected));
    // The fold itself, independently: W' = W * gamma / sqrt(var + eps), b' = (b - mean) * ... +
    // beta.
    const auto f = m->bn->weight.detach() / torch::sqrt(var + 1e-5);
    CHECK(same(w_fold, m->weight.detach() * f.reshape({-1, 1, 1, 1})));
    const auto b0 = bias ? m->bias.detach() : torch::zeros({5});
    CHECK(same(b_fold, (b0 - mean) * f + m->bn->bias.detach()));

    // Gradients reach the conv weight and both BN parameters through the fold.
    m->train();
    m->freeze_bn();
    m(x).sum().backward();
    CHECK(m->weight.grad().abs().sum().item<float>() > 0.0f);
    CHECK(m->bn->weight.grad().abs().sum().item<float>() > 0.0f);
    CHECK(m->bn->bias.grad().abs().sum().item<float>() > 0.0f);
  }
}

TEST_CASE("ConvBn2d with gamma = 0: no NaN, the channel outputs beta, gamma gets a gradient",
          "[nn][convbn]") {
  torch::manual_seed(9);
  auto m = make_conv_bn(qnn::ConvBn2dOptions(3, 4, 3).padding(1));
  {
    torch::NoGradGuard no_grad;
    m->bn->weight[1] = 0.0;
    m->bn->bias[1] = 0.375;
  }
  const auto x = torch::randn({4, 3, 5, 5});
  const auto y = m(x);
  CHECK_FALSE(torch::isnan(y).any().item<bool>());
  CHECK(torch::all(y.select(1, 1) == 0.375f).item<bool>());
  CHECK(torch::isfinite(m->bn->running_mean).all().item<bool>());
  CHECK(torch::isfinite(m->bn->running_var).all().item<bool>());
  // A random upstream gradient g: gamma's gradient is sum(g * x_hat) over the channel.
  (y * torch::randn_like(y)).sum().backward();
  CHECK(torch::isfinite(m->weight.grad()).all().item<bool>());
  CHECK(torch::isfinite(m->bn->weight.grad()).all().item<bool>());
  CHECK(m->bn->weight.grad()[1].item<float>() != 0.0f);  // gamma can leave 0
  // The quantizer's view: W' is 0 in that channel.
  const auto [w_fold, b_fold] = m->folded_weight_and_bias();
  CHECK(torch::all(w_fold[1] == 0.0f).item<bool>());
  CHECK(b_fold[1].item<float>() == 0.375f);
  // Frozen and eval paths: no division at all; the channel is beta.
  m->freeze_bn();
  const auto yf = m(x);
  CHECK_FALSE(torch::isnan(yf).any().item<bool>());
  CHECK(torch::all(yf.select(1, 1) == 0.375f).item<bool>());
}

// ---------------------------------------------------------------------------
// ActQuant, QuantAdd, Residual
// ---------------------------------------------------------------------------

TEST_CASE("ActQuant, QuantAdd and Residual against references", "[nn][add]") {
  torch::manual_seed(10);
  qnn::ActQuant aq;
  CHECK(keys_of(aq->named_buffers()) == std::set<std::string>{"quantizer.observed_min",
                                                              "quantizer.observed_max",
                                                              "quantizer.mode_code"});
  const auto x = torch::randn({2, 3, 4, 4});
  CHECK(same(aq(x), ref_act_fq(x, min_of(x), max_of(x))));

  qnn::QuantAdd add;
  CHECK(
      keys_of(add->named_parameters()) ==
      std::set<std::string>{"out_quant.quantizer.learned_min", "out_quant.quantizer.learned_max"});
  const auto a = torch::randn({2, 3, 4, 4});
  const auto b = torch::randn({3, 1, 1});  // broadcast
  const auto s = a + b;
  CHECK(same(add(a, b), ref_act_fq(s, min_of(s), max_of(s))));

  // Residual with an identity shortcut: add(body(x), x), its activation fused into the add.
  for (const auto act :
       {qnn::Activation::Identity, qnn::Activation::ReLU, qnn::Activation::ReLU6}) {
    torch::nn::Sequential body;
    body->push_back(qnn::QuantConv2d(qnn::QuantConv2dOptions(3, 3, 3).padding(1)));
    qnn::Residual block(body, nullptr, qnn::ResidualOptions().activation(act));
    const auto conv = block->body->ptr<qnn::QuantConv2dImpl>(0);
    const auto xin = 4.0 * torch::randn({2, 3, 5, 5});
    const auto y = block(xin);
    const auto sum =
        torch::nn::functional::conv2d(
            xin, ref_weight_fq(conv->weight.detach()),
            torch::nn::functional::Conv2dFuncOptions().bias(conv->bias.detach()).padding(1)) +
        xin;
    const auto z = activation_ref(sum, act);
    CHECK(same(y, ref_act_fq(z, min_of(z), max_of(z))));
    // The output quantizer observed the activated sum.
    CHECK(block->add->out_quant->quantizer->observed_min.item<float>() == min_of(z));
    CHECK(block->add->options.activation() == act);
  }

  // A shortcut module (the downsampling path of a ResNet block).
  torch::nn::Sequential body(qnn::QuantConv2d(qnn::QuantConv2dOptions(3, 6, 1).stride(2)));
  torch::nn::Sequential shortcut(qnn::QuantConv2d(qnn::QuantConv2dOptions(3, 6, 1).stride(2)));
  qnn::Residual down(body, shortcut);
  CHECK(keys_of(down->named_parameters()).count("shortcut.0.weight") == 1);
  CHECK(keys_of(down->named_parameters()).count("body.0.weight") == 1);
  CHECK(keys_of(down->named_buffers()).count("add.out_quant.quantizer.observed_min") == 1);
  const auto xin = torch::randn({2, 3, 6, 6});
  const auto y = down(xin);
  CHECK(y.sizes() == torch::IntArrayRef({2, 6, 3, 3}));
  const auto sum = body->forward(xin) + shortcut->forward(xin);  // eval-free: conv weights only
  CHECK(same(y, ref_act_fq(sum, min_of(sum), max_of(sum))));
}

TEST_CASE("QuantAdd fuses ReLU / ReLU6 before its output quantizer", "[nn][add]") {
  torch::manual_seed(18);
  const auto a = 4.0 * torch::randn({2, 3, 4, 4});
  const auto b = 4.0 * torch::randn({2, 3, 4, 4});
  for (const auto act : {qnn::Activation::ReLU, qnn::Activation::ReLU6}) {
    qnn::QuantAdd add(qnn::QuantAddOptions().activation(act));
    const auto z = activation_ref(a + b, act);
    CHECK(same(add(a, b), ref_act_fq(z, min_of(z), max_of(z))));
    CHECK(add->out_quant->quantizer->observed_min.item<float>() == 0.0f);
  }
  CHECK_THROWS_WITH(qnn::QuantAddOptions().activation("sigmoid"),
                    Contains("QuantAdd: activation must be 'none', 'relu' or 'relu6', got "
                             "'sigmoid'"));
}

TEST_CASE("SharedActQuant rounds to its source's grid and never observes", "[nn][add]") {
  torch::manual_seed(19);
  qnn::ActQuant source;
  qnn::SharedActQuant shared(source);
  CHECK(shared->named_parameters().is_empty());
  CHECK(shared->named_buffers().is_empty());
  CHECK(shared->children().empty());

  const auto x = torch::randn({4, 8, 3, 3});
  const auto ax = source(x);
  const auto pooled = ax.mean({2, 3});
  const auto before_min = source->quantizer->observed_min.clone();
  const auto before_max = source->quantizer->observed_max.clone();
  const auto y = shared(3.0 * pooled);  // outside the source's range: clipped, not observed
  CHECK(same(source->quantizer->observed_min, before_min));
  CHECK(same(source->quantizer->observed_max, before_max));
  CHECK(same(y, ref_act_fq(3.0 * pooled, min_of(x), max_of(x))));

  // Learn: gradients reach the source's learned range through the shared use.
  source->quantizer->learn();
  const auto z = shared(3.0 * pooled);
  CHECK(same(z, edgeqat::fake_quant_with_min_max_vars(3.0 * pooled,
                                                      source->quantizer->learned_min.detach(),
                                                      source->quantizer->learned_max.detach())));
  z.sum().backward();
  CHECK(source->quantizer->learned_max.grad().defined());
  // Off: the identity.
  source->quantizer->disable();
  CHECK(shared(x).is_same(x));

  CHECK_THROWS_WITH(shared->clone(), Contains("SharedActQuant cannot be cloned"));
  CHECK_THROWS_WITH(qnn::SharedActQuant(qnn::ActQuant(nullptr)),
                    Contains("SharedActQuant: source must be an ActQuant"));
}

TEST_CASE("Every module's parameter and buffer names are Python's", "[nn][names]") {
  qnn::ConvBn2d with_bias(qnn::ConvBn2dOptions(2, 3, 3).bias(true));
  const std::set<std::string> quant_params = {"weight_quant.learned_min",
                                              "weight_quant.learned_max"};
  const std::set<std::string> quant_buffers = {
      "weight_quant.observed_min", "weight_quant.observed_max", "weight_quant.mode_code"};
  std::set<std::string> params = {"weight", "bias", "bn.weight", "bn.bias"};
  params.insert(quant_params.begin(), quant_params.end());
  std::set<std::string> buffers = {"bn.running_mean", "bn.running_var", "bn.num_batches_tracked",
                                   "bn_frozen"};
  buffers.insert(quant_buffers.begin(), quant_buffers.end());
  CHECK(keys_of(with_bias->named_parameters()) == params);
  CHECK(keys_of(with_bias->named_buffers()) == buffers);
  CHECK(with_bias->bn_frozen.scalar_type() == torch::kBool);
  CHECK(with_bias->bn_frozen.dim() == 0);
  CHECK(with_bias->bn->num_batches_tracked.scalar_type() == torch::kLong);

  qnn::ConvBn2d no_bias(2, 3, 3);  // bias defaults to false, as in Python
  params.erase("bias");
  CHECK(keys_of(no_bias->named_parameters()) == params);

  qnn::QuantConv2d conv(2, 3, 3);  // bias defaults to true
  std::set<std::string> conv_params = {"weight", "bias"};
  conv_params.insert(quant_params.begin(), quant_params.end());
  CHECK(keys_of(conv->named_parameters()) == conv_params);
  CHECK(keys_of(conv->named_buffers()) == quant_buffers);
}

// ---------------------------------------------------------------------------
// Model controls
// ---------------------------------------------------------------------------

TEST_CASE("freeze_bn, freeze_observers, learn_ranges and observe switch a whole model",
          "[nn][controls]") {
  torch::manual_seed(11);
  edgeqat_test::QatNet net;
  std::vector<std::shared_ptr<qnn::FakeQuantizerImpl>> quantizers;
  std::vector<std::shared_ptr<qnn::ConvBn2dImpl>> conv_bns;
  for (const auto& m : net->modules()) {
    if (auto q = std::dynamic_pointer_cast<qnn::FakeQuantizerImpl>(m)) quantizers.push_back(q);
    if (auto c = std::dynamic_pointer_cast<qnn::ConvBn2dImpl>(m)) conv_bns.push_back(c);
  }
  REQUIRE(quantizers.size() == 12);  // 5 weights, 6 ActQuants, the add
  REQUIRE(conv_bns.size() == 3);

  // Nothing observed yet: both refuse, name the quantizers, and change nothing.
  CHECK_THROWS_WITH(qnn::freeze_observers(net),
                    Contains("freeze_observers: these quantizers have not observed data yet: "
                             "input_quant.quantizer, stem.weight_quant"));
  CHECK_THROWS_WITH(qnn::learn_ranges(net), Contains("block.add.out_quant.quantizer"));
  for (const auto& q : quantizers) CHECK(q->mode() == qnn::Mode::Observe);

  net->fc->weight_quant->disable();
  net(torch::randn({4, 3, 8, 8}));

  qnn::freeze_bn(net);
  for (const auto& c : conv_bns) CHECK(c->is_bn_frozen());

  qnn::freeze_observers(net);
  for (const auto& q : quantizers) {
    CHECK(q->mode() == (q == net->fc->weight_quant.ptr() ? qnn::Mode::Off : qnn::Mode::Frozen));
  }
  qnn::learn_ranges(net);
  for (const auto& q : quantizers) {
    CHECK(q->mode() == (q == net->fc->weight_quant.ptr() ? qnn::Mode::Off : qnn::Mode::Learn));
  }
  qnn::observe(qnn::freeze_bn(net));  // chains; Off stays Off
  for (const auto& q : quantizers) {
    CHECK(q->mode() == (q == net->fc->weight_quant.ptr() ? qnn::Mode::Off : qnn::Mode::Observe));
  }
  // A quantizer given directly (the model itself is the quantizer).
  qnn::FakeQuantizerImpl lone{qnn::QuantSpec()};
  CHECK_THROWS_WITH(qnn::freeze_observers(lone), Contains("yet: <model>"));
}

// ---------------------------------------------------------------------------
// Training, save / load, clone
// ---------------------------------------------------------------------------

namespace {

struct Task {
  Tensor templates;
  std::vector<std::pair<Tensor, Tensor>> batches;
};

Task make_batches(int64_t steps, int64_t batch, uint64_t seed) {
  torch::manual_seed(seed);
  Task task;
  task.templates = torch::randn({4, 3, 8, 8});
  for (int64_t i = 0; i < steps; ++i) {
    task.batches.push_back(edgeqat_test::make_task(task.templates, batch, 1.0));
  }
  return task;
}

// One SGD / Adam step; returns the loss.
float train_step(edgeqat_test::QatNet& net, torch::optim::Optimizer& opt, const Tensor& x,
                 const Tensor& y) {
  opt.zero_grad();
  const auto loss = torch::nn::functional::cross_entropy(net(x), y);
  loss.backward();
  opt.step();
  return loss.item<float>();
}

// The QAT schedule used by the training tests: observe with BN learning, then
// freeze BN, then learn the ranges.
// (The EMA activation ranges, decay 0.999, barely leave the first batch's range: the
// logits stay clipped, and the loss plateaus, until learn_ranges lets them widen.)
constexpr int64_t kFreezeBnAt = 30, kLearnAt = 55;
void apply_schedule(edgeqat_test::QatNet& net, int64_t step) {
  if (step == kFreezeBnAt) qnn::freeze_bn(net);
  if (step == kLearnAt) qnn::learn_ranges(net);
}

}  // namespace

TEST_CASE("A small QAT model trains in a plain LibTorch loop: the loss falls", "[nn][train]") {
  constexpr int64_t kSteps = 80;
  const auto task = make_batches(kSteps, 32, 12);
  torch::manual_seed(13);
  edgeqat_test::QatNet net;
  torch::optim::Adam opt(net->parameters(), torch::optim::AdamOptions(3e-2));

  std::vector<float> losses;
  for (int64_t step = 0; step < kSteps; ++step) {
    apply_schedule(net, step);
    losses.push_back(train_step(net, opt, task.batches[step].first, task.batches[step].second));
  }
  auto mean_of = [&](int64_t from, int64_t to) {
    float s = 0.0f;
    for (int64_t i = from; i < to; ++i) s += losses[i];
    return s / static_cast<float>(to - from);
  };
  const float first = mean_of(0, 5), last = mean_of(kSteps - 5, kSteps);
  INFO("mean loss of the first 5 steps " << first << ", of the last 5 " << last);
  for (const float l : losses) REQUIRE(std::isfinite(l));
  CHECK(last < 0.3f * first);

  // The learned ranges were trained (they moved away from the observed ones).
  CHECK(net->input_quant->quantizer->mode() == qnn::Mode::Learn);
  CHECK(net->logits_quant->quantizer->learned_max.grad().defined());

  // Held-out accuracy in eval mode (the int8 graph).
  torch::manual_seed(14);
  const auto [x, y] = edgeqat_test::make_task(task.templates, 256, 1.0);
  net->eval();
  torch::NoGradGuard no_grad;
  const auto accuracy = (net(x).argmax(1) == y).to(torch::kFloat).mean().item<float>();
  INFO("held-out accuracy " << accuracy);
  CHECK(accuracy > 0.9f);
}

TEST_CASE(
    "torch::save / torch::load mid-training restore every quantizer and continue "
    "identically",
    "[nn][serialize]") {
  constexpr int64_t kSteps = 60, kSaveAt = 40;  // BN frozen before the save, learn_ranges after
  const auto task = make_batches(kSteps, 16, 15);
  torch::manual_seed(16);
  edgeqat_test::QatNet net;
  torch::optim::Adam opt(net->parameters(), torch::optim::AdamOptions(1e-2));
  for (int64_t step = 0; step < kSaveAt; ++step) {
    apply_schedule(net, step);
    train_step(net, opt, task.batches[step].first, task.batches[step].second);
  }
  // Mixed state at the save: BN frozen, one quantizer off, one learning.
  net->dw->weight_quant->disable();
  net->dw_quant->quantizer->learn();
  const auto tmp = std::filesystem::temp_directory_path();
  const std::string model_path = (tmp / "edgeqat_test_nn_model.pt").string();
  const std::string optim_path = (tmp / "edgeqat_test_nn_optim.pt").string();
  torch::save(net, model_path);
  torch::save(opt, optim_path);

  torch::manual_seed(999);  // different initial weights: all must come from the file
  edgeqat_test::QatNet restored;
  torch::optim::Adam restored_opt(restored->parameters(), torch::optim::AdamOptions(1e-2));
  torch::load(restored, model_path);
  torch::load(restored_opt, optim_path);
  std::remove(model_path.c_str());
  std::remove(optim_path.c_str());

  const auto params = net->named_parameters();
  const auto buffers = net->named_buffers();
  const auto rparams = restored->named_parameters();
  const auto rbuffers = restored->named_buffers();
  REQUIRE(keys_of(params) == keys_of(rparams));
  REQUIRE(keys_of(buffers) == keys_of(rbuffers));
  for (const auto& p : params) CHECK(same(p.value(), rparams[p.key()]));
  for (const auto& b : buffers) {
    INFO(b.key());
    CHECK(same(b.value(), rbuffers[b.key()]));
  }
  CHECK(restored->stem->is_bn_frozen());
  CHECK(restored->dw->weight_quant->mode() == qnn::Mode::Off);
  CHECK(restored->dw_quant->quantizer->mode() == qnn::Mode::Learn);
  CHECK(restored->input_quant->quantizer->mode() == qnn::Mode::Observe);

  // Continue both, through another phase change (learn_ranges at kLearnAt).
  for (int64_t step = kSaveAt; step < kSteps; ++step) {
    apply_schedule(net, step);
    apply_schedule(restored, step);
    const auto& [x, y] = task.batches[step];
    const float a = train_step(net, opt, x, y);
    const float b = train_step(restored, restored_opt, x, y);
    INFO("step " << step);
    CHECK(a == b);
  }
  for (const auto& p : net->named_parameters()) {
    INFO(p.key());
    CHECK(same(p.value(), restored->named_parameters()[p.key()]));
  }
  for (const auto& b : net->named_buffers()) {
    INFO(b.key());
    CHECK(same(b.value(), restored->named_buffers()[b.key()]));
  }
}

TEST_CASE("clone() is a deep copy with the same state", "[nn][clone]") {
  torch::manual_seed(17);
  torch::nn::Sequential body(qnn::ConvBn2d(qnn::ConvBn2dOptions(3, 3, 3).padding(1)),
                             qnn::ActQuant());
  torch::nn::Sequential model(qnn::ActQuant(), qnn::Residual(body), qnn::QuantConv2d(3, 2, 1));
  const auto x = torch::randn({2, 3, 5, 5});
  model->forward(x);
  auto copy = std::dynamic_pointer_cast<torch::nn::SequentialImpl>(model->clone());
  REQUIRE(copy);
  const auto original_buffers = model->named_buffers();
  for (const auto& b : copy->named_buffers()) {
    INFO(b.key());
    CHECK(same(b.value(), original_buffers[b.key()]));
    CHECK_FALSE(b.value().is_same(original_buffers[b.key()]));
  }
  const auto original_params = model->named_parameters();
  for (const auto& p : copy->named_parameters()) {
    CHECK(same(p.value(), original_params[p.key()]));
    CHECK_FALSE(p.value().is_same(original_params[p.key()]));
  }
  CHECK(same(copy->forward(x), model->forward(x)));
  // Independent: training the copy leaves the original alone.
  const auto before = model->named_buffers()["1.add.out_quant.quantizer.observed_max"].clone();
  copy->forward(10.0 * x);
  CHECK(same(model->named_buffers()["1.add.out_quant.quantizer.observed_max"], before));
}

// ---------------------------------------------------------------------------
// Argument errors
// ---------------------------------------------------------------------------

TEST_CASE("Module argument errors name the argument and the value", "[nn][errors]") {
  using qnn::ConvBn2dOptions;
  using qnn::QuantConv2dOptions;
  CHECK_THROWS_WITH(qnn::QuantConv2d(QuantConv2dOptions(4, 6, 3).groups(4)),
                    Contains("QuantConv2d: groups=4 must be positive and divide in_channels=4 "
                             "and out_channels=6"));
  CHECK_THROWS_WITH(qnn::QuantConv2d(QuantConv2dOptions(4, 4, 3).groups(0)), Contains("groups=0"));
  CHECK_THROWS_WITH(qnn::QuantConv2d(QuantConv2dOptions(0, 4, 3)),
                    Contains("QuantConv2d: in_channels must be positive, got 0"));
  CHECK_THROWS_WITH(qnn::QuantConv2d(QuantConv2dOptions(4, 4, {3, 0})),
                    Contains("QuantConv2d: kernel_size must be positive, got [3, 0]"));
  CHECK_THROWS_WITH(qnn::QuantConv2d(QuantConv2dOptions(4, 4, 3).stride({1, 0})),
                    Contains("stride must be positive, got [1, 0]"));
  CHECK_THROWS_WITH(qnn::QuantConv2d(QuantConv2dOptions(4, 4, 3).padding(-1)),
                    Contains("padding must be non-negative, got [-1, -1]"));
  CHECK_THROWS_WITH(qnn::QuantConv2d(QuantConv2dOptions(4, 4, 3).padding(torch::kSame).stride(2)),
                    Contains("QuantConv2d: padding='same' needs stride 1, got [2, 2]"));
  CHECK_THROWS_WITH(qnn::ConvBn2d(ConvBn2dOptions(4, 4, 3).dilation(0)),
                    Contains("ConvBn2d: dilation must be positive, got [0, 0]"));
  CHECK_THROWS_WITH(ConvBn2dOptions(4, 4, 3).activation("gelu"),
                    Contains("ConvBn2d: activation must be 'none', 'relu' or 'relu6', got 'gelu'"));
  CHECK_THROWS_WITH(qnn::ResidualOptions().activation("tanh"),
                    Contains("Residual: activation must be 'none', 'relu' or 'relu6', got 'tanh'"));
  CHECK_THROWS_WITH(qnn::ConvBn2d(ConvBn2dOptions(4, 4, 3).eps(0.0)),
                    Contains("ConvBn2d: eps must be positive, got 0"));
  CHECK_THROWS_WITH(qnn::ConvBn2d(ConvBn2dOptions(4, 4, 3).momentum(1.5)),
                    Contains("ConvBn2d: momentum must be in [0, 1]"));
  CHECK_THROWS_WITH(qnn::QuantLinear(0, 3),
                    Contains("QuantLinear: in_features must be positive, got 0"));
  CHECK_THROWS_WITH(qnn::QuantLinear(3, -2),
                    Contains("QuantLinear: out_features must be positive, got -2"));
  const auto bad_axis = qnn::QConfig().weight(qnn::QConfig::default_weight().axis(1));
  CHECK_THROWS_WITH(qnn::QuantLinear(qnn::QuantLinearOptions(3, 2).config(bad_axis)),
                    Contains("a per-channel weight QuantSpec must have axis=0"));
  CHECK_THROWS_WITH(qnn::QuantConv2d(QuantConv2dOptions(3, 2, 1).config(bad_axis)),
                    Contains("got axis=1"));
  CHECK_THROWS_WITH(qnn::Residual(torch::nn::Sequential(nullptr)),
                    Contains("Residual: body must be a module"));
  // Per-tensor weight quantization is allowed (no axis constraint).
  const auto per_tensor_w = qnn::QConfig().weight(qnn::QuantSpec().symmetric(true));
  qnn::QuantLinear pt(qnn::QuantLinearOptions(3, 2).config(per_tensor_w));
  CHECK(pt->weight_quant->observed_min.dim() == 0);
}

// ---------------------------------------------------------------------------
// The int32 bias (modules.h): a layer linked to its input's ActQuant
// ---------------------------------------------------------------------------

namespace {

// The nudged float32 scale of [lo, hi] on a grid of `steps` steps; 1 for a one-point range.
float ref_scale(float lo, float hi, float steps) {
  const volatile float s = (hi - lo) / steps;
  return s > 0.0f ? s : 1.0f;
}

// The int8 model's bias per channel, written out in scalar arithmetic: s = double(s_in) *
// double(s_w[c]) (8-bit asymmetric input grid, 255 steps; default weight grid, 254 steps,
// symmetric [-max|w_c|, max|w_c|]), q = std::round(double(b) / s) clamped to +-(2^31 - 1),
// float(q * s).
Tensor ref_int32_bias(const Tensor& b, const qnn::FakeQuantizer& input, const Tensor& w) {
  const auto [in_lo, in_hi] = input->quant_range();
  const double s_in = ref_scale(in_lo.item<float>(), in_hi.item<float>(), 255.0f);
  const auto bound = w.detach().abs().reshape({w.size(0), -1}).amax(1);
  auto out = torch::empty({b.size(0)});
  for (int64_t c = 0; c < b.size(0); ++c) {
    const float wb = bound[c].item<float>();
    const double s = s_in * static_cast<double>(ref_scale(-wb, wb, 254.0f));
    double q = std::round(static_cast<double>(b[c].item<float>()) / s);
    q = std::min(std::max(q, -2147483647.0), 2147483647.0);
    out[c] = static_cast<float>(q * s);
  }
  return out;
}

}  // namespace

TEST_CASE("A layer linked to its input's ActQuant adds the int8 model's int32 bias", "[nn][bias]") {
  torch::manual_seed(90);
  qnn::ActQuant aq;
  qnn::QuantConv2d conv(qnn::QuantConv2dOptions(4, 6, 3).padding(1).groups(2));
  qnn::QuantConv2d plain(std::dynamic_pointer_cast<qnn::QuantConv2dImpl>(conv->clone()));
  CHECK(conv->input_quantizer().is_empty());
  CHECK(&conv->set_input_quantizer(aq) == conv.get());
  CHECK(conv->input_quantizer().get() == aq.get());
  // Not state: the same parameters, buffers and children as unlinked.
  CHECK(keys_of(conv->named_parameters()) == keys_of(plain->named_parameters()));
  CHECK(keys_of(conv->named_buffers()) == keys_of(plain->named_buffers()));
  CHECK(conv->children().size() == plain->children().size());

  for (int step = 0; step < 2; ++step) {
    const auto xq = aq(torch::randn({2, 4, 7, 7}) * (step + 1.0)).detach();
    const auto y = conv(xq);
    const auto bias = ref_int32_bias(conv->bias, aq->quantizer, conv->weight);
    const auto want = torch::conv2d(xq, ref_weight_fq(conv->weight.detach()), bias, 1, 1, 1, 2);
    CHECK(same(y, want));
    CHECK_FALSE(same(y, plain(xq)));  // the rounding shows
    // Straight through: the bias gets the float bias's gradient.
    const auto grad = torch::randn_like(y);
    conv->zero_grad();
    plain->zero_grad();
    y.backward(grad);
    plain(xq).backward(grad);
    CHECK(same(conv->bias.grad(), plain->bias.grad()));
    CHECK(same(conv->weight.grad(), plain->weight.grad()));
  }

  // The same for QuantLinear, linked through a SharedActQuant to its source.
  qnn::QuantLinear fc(6, 3);
  fc->set_input_quantizer(qnn::SharedActQuant(aq));
  CHECK(fc->input_quantizer().get() == aq.get());
  const auto v = aq(torch::randn({5, 6}));
  CHECK(same(fc(v), torch::linear(v, ref_weight_fq(fc->weight.detach()),
                                  ref_int32_bias(fc->bias, aq->quantizer, fc->weight))));

  // Float bias: unlinked, QConfig().quantize_bias(false), either quantizer off, no range yet.
  const auto x = aq(torch::randn({2, 4, 7, 7}));
  CHECK(qnn::QConfig().quantize_bias());
  CHECK(qnn::QConfig().quantize_bias(false) != qnn::QConfig());
  qnn::QuantConv2d off(qnn::QuantConv2dOptions(4, 6, 3).padding(1).groups(2).config(
      qnn::QConfig().quantize_bias(false)));
  {
    torch::NoGradGuard no_grad;
    off->weight.copy_(conv->weight);
    off->bias.copy_(conv->bias);
  }
  off->set_input_quantizer(aq);
  CHECK(same(off(x), plain(x)));
  aq->quantizer->disable();
  CHECK(same(conv(x), plain(x)));
  aq->quantizer->observe();
  conv->weight_quant->disable();
  plain->weight_quant->disable();
  CHECK(same(conv(x), plain(x)));
  conv->weight_quant->observe();
  plain->weight_quant->observe();
  qnn::ActQuant fresh;  // never observed
  conv->set_input_quantizer(fresh);
  CHECK(same(conv(x), plain(x)));
  conv->set_input_quantizer(qnn::ActQuant(nullptr));
  CHECK(conv->input_quantizer().is_empty());
  CHECK(same(conv(x), plain(x)));

  // Learned input range: the learned one.
  conv->set_input_quantizer(aq);
  aq->quantizer->learn();
  {
    torch::NoGradGuard no_grad;
    aq->quantizer->learned_max.mul_(0.75);
  }
  const auto want =
      torch::conv2d(x, ref_weight_fq(conv->weight.detach()),
                    ref_int32_bias(conv->bias, aq->quantizer, conv->weight), 1, 1, 1, 2);
  CHECK(same(conv(x), want));

  // clone() is refused while linked (the copy would read this model's quantizer).
  CHECK_THROWS_WITH(conv->clone(),
                    Contains("QuantConv2d linked to an input quantizer cannot be cloned"));
  CHECK_THROWS_WITH(fc->clone(), Contains("QuantLinear linked to an input quantizer"));
}

TEST_CASE(
    "ConvBn2d linked to its input's ActQuant: the folded bias as the int32 bias once BN is frozen",
    "[nn][bias]") {
  torch::manual_seed(91);
  qnn::ActQuant aq;
  qnn::ConvBn2d m(qnn::ConvBn2dOptions(4, 6, 3).padding(1).bias(true).activation("relu"));
  {
    torch::NoGradGuard no_grad;
    m->bn->running_var.uniform_(0.5, 1.5);
    m->bn->running_mean.normal_();
    m->bn->weight.uniform_(0.5, 1.5);
    m->bn->bias.normal_();
  }
  qnn::ConvBn2d plain(std::dynamic_pointer_cast<qnn::ConvBn2dImpl>(m->clone()));  // unlinked
  m->set_input_quantizer(aq);
  // BN on batch statistics: the float conv bias, as unlinked.
  const auto x = aq(torch::randn({4, 4, 6, 6})).detach();
  CHECK(same(m(x), plain->forward(x)));
  CHECK(same(m->bn->running_mean, plain->bn->running_mean));
  // BN frozen and eval: conv(x, fq(W'), int32 bias of b').
  m->freeze_bn();
  plain->freeze_bn();
  for (const bool eval : {false, true}) {
    if (eval) {
      m->eval();
      plain->eval();
    }
    const auto y = m(x);
    const auto [w_fold, b_fold] = m->folded_weight_and_bias();
    const auto want = torch::relu(torch::conv2d(
        x, ref_weight_fq(w_fold), ref_int32_bias(b_fold, aq->quantizer, w_fold), 1, 1));
    INFO("eval " << eval);
    CHECK(same(y, want));
    CHECK_FALSE(same(y, plain->forward(x)));
  }
  CHECK_THROWS_WITH(m->clone(), Contains("ConvBn2d linked to an input quantizer"));
}
