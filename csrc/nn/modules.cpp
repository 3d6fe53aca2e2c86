// The LibTorch QAT modules and the model-level controls: the C++ twins of
// python/edgeqat/nn/*.py and python/edgeqat/controls.py. Each forward runs the
// same ops in the same order as its Python twin, so both give bit-identical
// outputs and gradients for the same weights and inputs.
#include "edgeqat/nn/modules.h"

#include <c10/util/Exception.h>
#include <torch/nn/functional/activation.h>
#include <torch/nn/init.h>

#include <cmath>
#include <initializer_list>
#include <memory>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "edgeqat/nn/controls.h"
#include "edgeqat/ops.h"

namespace edgeqat::nn {

const char* activation_name(Activation activation) {
  switch (activation) {
    case Activation::Identity:
      return "none";
    case Activation::ReLU:
      return "relu";
    case Activation::ReLU6:
      return "relu6";
  }
  return "<invalid>";
}

namespace {

Activation parse_activation(const std::string& value, const char* owner) {
  if (value == "none") return Activation::Identity;
  if (value == "relu") return Activation::ReLU;
  TORCH_CHECK_VALUE(value == "relu6", owner,
                    ": activation must be 'none', 'relu' or 'relu6', got '", value, "'");
  return Activation::ReLU6;
}

void check_activation(Activation activation, const char* owner) {
  TORCH_CHECK_VALUE(activation == Activation::Identity || activation == Activation::ReLU ||
                        activation == Activation::ReLU6,
                    owner, ": activation must be Activation::Identity, ReLU or ReLU6, got ",
                    static_cast<int>(activation));
}

torch::Tensor apply_activation(torch::Tensor y, Activation activation) {
  // In place, as Python's F.relu(y, inplace=True) / F.relu6(y, inplace=True)
  // (relu_ / hardtanh_(0, 6)): y is always the caller's own fresh tensor and no
  // backward needs it, so no second activation tensor is kept.
  switch (activation) {
    case Activation::ReLU:
      return y.relu_();
    case Activation::ReLU6:
      return torch::hardtanh_(y, 0.0, 6.0);
    case Activation::Identity:
      break;
  }
  return y;
}

// The weight quantizer of a conv / linear layer (Python's make_weight_quantizer):
// a per-channel spec must use axis 0, the output channels, as the int8 model
// (TFLite spec) has one weight scale per output channel.
FakeQuantizer make_weight_quantizer(const QuantSpec& spec, int64_t out_channels) {
  TORCH_CHECK_VALUE(!spec.per_channel() || spec.axis() == 0,
                    "a per-channel weight QuantSpec must have axis=0 (output channels of conv / "
                    "linear weights), got axis=",
                    spec.axis());
  return FakeQuantizer(spec,
                       spec.per_channel() ? std::optional<int64_t>(out_channels) : std::nullopt);
}

// Kaiming-uniform weight (a = sqrt(5)) and a bias uniform in +-1/sqrt(fan_in),
// as torch.nn.Linear / Conv2d (Python's init_weight_and_bias): the same RNG
// draws in the same order, so the same seed gives the same initial weights.
void init_weight_and_bias(torch::Tensor& weight, torch::Tensor& bias) {
  torch::NoGradGuard no_grad;
  torch::nn::init::kaiming_uniform_(weight, /*a=*/std::sqrt(5.0));
  if (bias.defined()) {
    const auto fan_in = std::get<0>(torch::nn::init::_calculate_fan_in_and_fan_out(weight));
    const double bound = fan_in > 0 ? 1.0 / std::sqrt(static_cast<double>(fan_in)) : 0.0;
    torch::nn::init::uniform_(bias, -bound, bound);
  }
}

// Geometry checks shared by QuantConv2d and ConvBn2d; the messages name the
// module, the argument and its value.
template <typename Options>
void check_conv_options(const Options& o, const char* owner) {
  TORCH_CHECK_VALUE(o.in_channels() > 0, owner, ": in_channels must be positive, got ",
                    o.in_channels());
  TORCH_CHECK_VALUE(o.out_channels() > 0, owner, ": out_channels must be positive, got ",
                    o.out_channels());
  TORCH_CHECK_VALUE(
      o.groups() > 0 && o.in_channels() % o.groups() == 0 && o.out_channels() % o.groups() == 0,
      owner, ": groups=", o.groups(), " must be positive and divide in_channels=", o.in_channels(),
      " and out_channels=", o.out_channels());
  for (int i = 0; i < 2; ++i) {
    TORCH_CHECK_VALUE((*o.kernel_size())[i] > 0, owner, ": kernel_size must be positive, got ",
                      o.kernel_size());
    TORCH_CHECK_VALUE((*o.stride())[i] > 0, owner, ": stride must be positive, got ", o.stride());
    TORCH_CHECK_VALUE((*o.dilation())[i] > 0, owner, ": dilation must be positive, got ",
                      o.dilation());
  }
  if (const auto* pad = std::get_if<torch::ExpandingArray<2>>(&o.padding())) {
    TORCH_CHECK_VALUE((**pad)[0] >= 0 && (**pad)[1] >= 0, owner,
                      ": padding must be non-negative, got ", *pad);
  } else if (std::holds_alternative<torch::enumtype::kSame>(o.padding())) {
    TORCH_CHECK_VALUE((*o.stride())[0] == 1 && (*o.stride())[1] == 1, owner,
                      ": padding='same' needs stride 1, got ", o.stride());
  }
}

// F.conv2d(x, weight, bias, stride, padding, dilation, groups): the int or the
// string overload of aten::conv2d, as Python picks them.
template <typename Options>
torch::Tensor conv2d(const Options& o, const torch::Tensor& x, const torch::Tensor& weight,
                     const torch::Tensor& bias) {
  if (const auto* pad = std::get_if<torch::ExpandingArray<2>>(&o.padding())) {
    return torch::conv2d(x, weight, bias, o.stride(), *pad, o.dilation(), o.groups());
  }
  const char* mode = std::holds_alternative<torch::enumtype::kSame>(o.padding()) ? "same" : "valid";
  return torch::conv2d(x, weight, bias, o.stride(), mode, o.dilation(), o.groups());
}

template <typename Options>
void print_conv_geometry(std::ostream& stream, const Options& o) {
  stream << o.in_channels() << ", " << o.out_channels() << ", kernel_size=" << o.kernel_size()
         << ", stride=" << o.stride() << ", padding=";
  if (const auto* pad = std::get_if<torch::ExpandingArray<2>>(&o.padding())) {
    stream << *pad;
  } else {
    stream << (std::holds_alternative<torch::enumtype::kSame>(o.padding()) ? "'same'" : "'valid'");
  }
  if ((*o.dilation())[0] != 1 || (*o.dilation())[1] != 1) stream << ", dilation=" << o.dilation();
  if (o.groups() != 1) stream << ", groups=" << o.groups();
  stream << ", bias=" << (o.bias() ? "true" : "false");
}

// -- the int32 bias (modules.h, "The int32 bias"; Python's nn/_bias.py, op for op) -----------

// The largest |int32| bias the exporter accepts (GraphBuilder refuses |round(b / s)| above it).
constexpr double kInt32Max = 2147483647.0;

// The range `q` quantized with in its latest forward (detached; the learned one in Learn mode),
// or nullopt where its forward returns the float values: Off, a histogram source calibrating
// (Observe in training mode), no range observed yet.
std::optional<Range> quantizing_range(const FakeQuantizerImpl& q) {
  const Mode mode = q.mode();
  if (mode == Mode::Off) return std::nullopt;
  if (mode == Mode::Learn) {
    const auto [lo, hi] = q.learned_range();
    return Range{lo.detach(), hi.detach()};
  }
  if (mode == Mode::Observe && q.is_training() &&
      q.spec().range_source() == RangeSource::Histogram) {
    return std::nullopt;
  }
  if (!q.has_range()) return std::nullopt;
  return q.observed_range();
}

// The fake-quant op's nudged scale of each range, float32 ((hi - lo) / (quant_max - quant_min),
// divided by a tensor as the op divides), 1.0 for a degenerate range: GraphBuilder's scales.
torch::Tensor grid_scale(const Range& range, const QuantSpec& spec) {
  const auto lo = range.first.detach().to(torch::kFloat32);
  const auto hi = range.second.detach().to(torch::kFloat32);
  const int64_t quant_min = spec.narrow_range() ? 1 : 0;
  const auto steps = torch::full(
      {}, static_cast<double>((int64_t{1} << spec.num_bits()) - 1 - quant_min), lo.options());
  const auto scale = (hi - lo) / steps;
  return torch::where(scale > 0, scale, torch::ones_like(scale));
}

// round(b / s) * s with s = s_in * s_w[c] as GraphBuilder computes the int32 bias (b as
// float32, s and b / s in float64, ties away from zero, clamped to +-(2^31 - 1)), rounded
// once to the bias's dtype; gradient straight through to the bias.
torch::Tensor int32_bias(const torch::Tensor& bias, const Range& input_range,
                         const QuantSpec& input_spec, const Range& weight_range,
                         const QuantSpec& weight_spec) {
  auto scale = grid_scale(input_range, input_spec).to(torch::kFloat64) *
               grid_scale(weight_range, weight_spec).to(torch::kFloat64);
  scale = scale.to(bias.device());
  const auto v = bias.detach().to(torch::kFloat32).to(torch::kFloat64) / scale;
  // std::round: away from zero from a fractional part of 0.5 on (v - trunc(v) is exact).
  const auto t = torch::trunc(v);
  auto q = torch::where((v - t).abs() >= 0.5, t + torch::sign(v), t);
  q = q.clamp(-kInt32Max, kInt32Max);
  const auto simulated = (q * scale).to(bias.scalar_type());
  // Straight-through: the value of `simulated` exactly (b - b is 0), the gradient of `bias`.
  return simulated + (bias - bias.detach());
}

// The bias to add in this forward, read after the weight quantizer ran: `bias` itself, or its
// int32 simulation when linked, config.quantize_bias(), and both quantizers quantize now.
torch::Tensor bias_for_forward(const torch::Tensor& bias, const std::shared_ptr<ActQuantImpl>& link,
                               const FakeQuantizerImpl& weight_quant, const QConfig& config) {
  if (!bias.defined() || !link || !config.quantize_bias()) return bias;
  const FakeQuantizerImpl& input_quant = *link->quantizer;
  const auto input_range = quantizing_range(input_quant);
  if (!input_range) return bias;
  const auto weight_range = quantizing_range(weight_quant);
  if (!weight_range) return bias;
  return int32_bias(bias, *input_range, input_quant.spec(), *weight_range, weight_quant.spec());
}

std::shared_ptr<ActQuantImpl> link_of(const ActQuant& quantizer) {
  return quantizer.is_empty() ? nullptr : quantizer.ptr();
}

std::shared_ptr<ActQuantImpl> link_of(const SharedActQuant& quantizer) {
  TORCH_CHECK_VALUE(!quantizer.is_empty(),
                    "set_input_quantizer: got an empty SharedActQuant holder (nullptr)");
  return quantizer->source.ptr();
}

void check_not_linked(const std::shared_ptr<ActQuantImpl>& link, const char* owner) {
  TORCH_CHECK(!link, owner,
              " linked to an input quantizer cannot be cloned: the copy would still read the "
              "original model's quantizer; build a new model, link it (set_input_quantizer) and "
              "torch::load the state into it instead");
}

}  // namespace

// ---------------------------------------------------------------------------
// QuantLinear
// ---------------------------------------------------------------------------

QuantLinearImpl::QuantLinearImpl(const QuantLinearOptions& options_) : options(options_) {
  TORCH_CHECK_VALUE(options.in_features() > 0, "QuantLinear: in_features must be positive, got ",
                    options.in_features());
  TORCH_CHECK_VALUE(options.out_features() > 0, "QuantLinear: out_features must be positive, got ",
                    options.out_features());
  reset();
}

void QuantLinearImpl::reset() {
  weight =
      register_parameter("weight", torch::empty({options.out_features(), options.in_features()}));
  bias = options.bias() ? register_parameter("bias", torch::empty({options.out_features()}))
                        : torch::Tensor();
  weight_quant = register_module(
      "weight_quant", make_weight_quantizer(options.config().weight(), options.out_features()));
  reset_parameters();
}

void QuantLinearImpl::reset_parameters() { init_weight_and_bias(weight, bias); }

torch::Tensor QuantLinearImpl::forward(const torch::Tensor& x) {
  const auto w = weight_quant(weight);  // first: the bias reads the range it used
  return torch::linear(x, w,
                       bias_for_forward(bias, input_quantizer_, *weight_quant, options.config()));
}

std::shared_ptr<torch::nn::Module> QuantLinearImpl::clone(
    const std::optional<torch::Device>& device) const {
  check_not_linked(input_quantizer_, "QuantLinear");
  return torch::nn::Cloneable<QuantLinearImpl>::clone(device);
}

QuantLinearImpl& QuantLinearImpl::set_input_quantizer(const ActQuant& quantizer) {
  input_quantizer_ = link_of(quantizer);
  return *this;
}

QuantLinearImpl& QuantLinearImpl::set_input_quantizer(const SharedActQuant& quantizer) {
  input_quantizer_ = link_of(quantizer);
  return *this;
}

ActQuant QuantLinearImpl::input_quantizer() const { return ActQuant(input_quantizer_); }

void QuantLinearImpl::pretty_print(std::ostream& stream) const {
  stream << "edgeqat::nn::QuantLinear(in_features=" << options.in_features()
         << ", out_features=" << options.out_features()
         << ", bias=" << (options.bias() ? "true" : "false") << ")";
}

// ---------------------------------------------------------------------------
// QuantConv2d
// ---------------------------------------------------------------------------

QuantConv2dImpl::QuantConv2dImpl(const QuantConv2dOptions& options_) : options(options_) {
  check_conv_options(options, "QuantConv2d");
  reset();
}

void QuantConv2dImpl::reset() {
  const auto& k = *options.kernel_size();
  weight = register_parameter(
      "weight",
      torch::empty({options.out_channels(), options.in_channels() / options.groups(), k[0], k[1]}));
  bias = options.bias() ? register_parameter("bias", torch::empty({options.out_channels()}))
                        : torch::Tensor();
  weight_quant = register_module(
      "weight_quant", make_weight_quantizer(options.config().weight(), options.out_channels()));
  reset_parameters();
}

void QuantConv2dImpl::reset_parameters() { init_weight_and_bias(weight, bias); }

torch::Tensor QuantConv2dImpl::forward(const torch::Tensor& x) {
  const auto w = weight_quant(weight);  // first: the bias reads the range it used
  return conv2d(options, x, w,
                bias_for_forward(bias, input_quantizer_, *weight_quant, options.config()));
}

std::shared_ptr<torch::nn::Module> QuantConv2dImpl::clone(
    const std::optional<torch::Device>& device) const {
  check_not_linked(input_quantizer_, "QuantConv2d");
  return torch::nn::Cloneable<QuantConv2dImpl>::clone(device);
}

QuantConv2dImpl& QuantConv2dImpl::set_input_quantizer(const ActQuant& quantizer) {
  input_quantizer_ = link_of(quantizer);
  return *this;
}

QuantConv2dImpl& QuantConv2dImpl::set_input_quantizer(const SharedActQuant& quantizer) {
  input_quantizer_ = link_of(quantizer);
  return *this;
}

ActQuant QuantConv2dImpl::input_quantizer() const { return ActQuant(input_quantizer_); }

void QuantConv2dImpl::pretty_print(std::ostream& stream) const {
  stream << "edgeqat::nn::QuantConv2d(";
  print_conv_geometry(stream, options);
  stream << ")";
}

// ---------------------------------------------------------------------------
// ConvBn2d
// ---------------------------------------------------------------------------

ConvBn2dOptions& ConvBn2dOptions::activation(const std::string& value) {
  activation_ = parse_activation(value, "ConvBn2d");
  return *this;
}

ConvBn2dImpl::ConvBn2dImpl(const ConvBn2dOptions& options_) : options(options_) {
  check_conv_options(options, "ConvBn2d");
  check_activation(options.activation(), "ConvBn2d");
  TORCH_CHECK_VALUE(options.eps() > 0.0, "ConvBn2d: eps must be positive, got ", options.eps());
  if (options.momentum().has_value()) {
    const double m = *options.momentum();
    TORCH_CHECK_VALUE(m >= 0.0 && m <= 1.0,
                      "ConvBn2d: momentum must be in [0, 1] (or nullopt for a cumulative "
                      "average), got ",
                      m);
  }
  reset();
}

void ConvBn2dImpl::reset() {
  const auto& k = *options.kernel_size();
  weight = register_parameter(
      "weight",
      torch::empty({options.out_channels(), options.in_channels() / options.groups(), k[0], k[1]}));
  bias = options.bias() ? register_parameter("bias", torch::empty({options.out_channels()}))
                        : torch::Tensor();
  weight_quant = register_module(
      "weight_quant", make_weight_quantizer(options.config().weight(), options.out_channels()));
  bn = register_module("bn",
                       torch::nn::BatchNorm2d(torch::nn::BatchNormOptions(options.out_channels())
                                                  .eps(options.eps())
                                                  .momentum(options.momentum())));
  bn_frozen = register_buffer("bn_frozen", torch::tensor(false));
  init_weight_and_bias(weight, bias);
}

void ConvBn2dImpl::reset_parameters() {
  init_weight_and_bias(weight, bias);
  bn->reset_parameters();
  bn->reset_running_stats();
}

ConvBn2dImpl& ConvBn2dImpl::freeze_bn() {
  bn_frozen.fill_(true);
  return *this;
}

ConvBn2dImpl& ConvBn2dImpl::unfreeze_bn() {
  bn_frozen.fill_(false);
  return *this;
}

bool ConvBn2dImpl::is_bn_frozen() const { return bn_frozen.item<bool>(); }

torch::Tensor ConvBn2dImpl::fold_factor() const {
  // f = gamma / sqrt(running_var + eps), as torch.nn.utils.fusion.fuse_conv_bn_weights;
  // the same expression (same roundings) feeds the weight, the bias and the un-fold.
  return bn->weight / torch::sqrt(bn->running_var + bn->options.eps());
}

torch::Tensor ConvBn2dImpl::folded_bias(const torch::Tensor& factor) const {
  const auto b = bias.defined() ? bias : torch::zeros_like(bn->running_mean);
  return (b - bn->running_mean) * factor + bn->bias;
}

std::pair<torch::Tensor, torch::Tensor> ConvBn2dImpl::folded_weight_and_bias() const {
  torch::NoGradGuard no_grad;
  const auto factor = fold_factor();
  const auto w = weight * factor.reshape({-1, 1, 1, 1});
  return {w.detach(), folded_bias(factor).detach()};
}

namespace {

// ConvBn2d's weight path through fold_weight_fake_quant_ (W * f, the weight quantizer's step,
// the fake quant and, with `unfold`, the un-fold, in one op with a C++ backward), as Python's
// ConvBn2d._fused_weight: undefined where the unfused path must run (quantizer in Learn or Off
// mode, a range source the op does not serve, factor / state not matching the weight's dtype /
// device). Observes in Observe mode and training mode, as FakeQuantizer::forward.
torch::Tensor fused_folded_weight(FakeQuantizerImpl& quantizer, const torch::Tensor& weight,
                                  const torch::Tensor& factor, bool unfold) {
  const Mode mode = quantizer.mode();
  const QuantSpec& spec = quantizer.spec();
  const RangeSource source = spec.range_source();
  if ((mode != Mode::Observe && mode != Mode::Frozen) ||
      (source != RangeSource::Last && source != RangeSource::Ema &&
       source != RangeSource::Running) ||
      (spec.per_channel() && spec.axis() != 0) || factor.scalar_type() != weight.scalar_type() ||
      quantizer.observed_min.device() != weight.device()) {
    return {};
  }
  const bool observe = mode == Mode::Observe && quantizer.is_training();
  if (!observe && !quantizer.has_range()) {
    quantizer.observed_range();  // throws FakeQuantizer's error
  }
  return edgeqat::fold_weight_fake_quant_(quantizer.observed_min, quantizer.observed_max, weight,
                                          factor, observe, spec.averaging_constant(),
                                          source == RangeSource::Running, spec.symmetric(),
                                          spec.num_bits(), spec.narrow_range(), unfold);
}

}  // namespace

torch::Tensor ConvBn2dImpl::forward(const torch::Tensor& x) {
  const auto factor = fold_factor();
  const bool batch_stats = is_training() && !is_bn_frozen();
  const auto w = fused_folded_weight(*weight_quant, weight, factor, /*unfold=*/batch_stats);
  torch::Tensor y;
  if (!w.defined()) {
    const auto weight_q = weight_quant(weight * factor.reshape({-1, 1, 1, 1}));
    y = batch_stats ? forward_batch_stats(x, weight_q, factor)
                    : conv2d(options, x, weight_q, folded_bias_for_forward(factor));
  } else if (batch_stats) {
    y = bn(conv2d(options, x, w, bias));
  } else {
    y = conv2d(options, x, w, folded_bias_for_forward(factor));
  }
  return apply_activation(y, options.activation());
}

torch::Tensor ConvBn2dImpl::folded_bias_for_forward(const torch::Tensor& factor) const {
  // After the weight quantizer ran: the int32 bias reads the range it used.
  return bias_for_forward(folded_bias(factor), input_quantizer_, *weight_quant, options.config());
}

std::shared_ptr<torch::nn::Module> ConvBn2dImpl::clone(
    const std::optional<torch::Device>& device) const {
  check_not_linked(input_quantizer_, "ConvBn2d");
  return torch::nn::Cloneable<ConvBn2dImpl>::clone(device);
}

ConvBn2dImpl& ConvBn2dImpl::set_input_quantizer(const ActQuant& quantizer) {
  input_quantizer_ = link_of(quantizer);
  return *this;
}

ConvBn2dImpl& ConvBn2dImpl::set_input_quantizer(const SharedActQuant& quantizer) {
  input_quantizer_ = link_of(quantizer);
  return *this;
}

ActQuant ConvBn2dImpl::input_quantizer() const { return ActQuant(input_quantizer_); }

torch::Tensor ConvBn2dImpl::forward_batch_stats(const torch::Tensor& x,
                                                const torch::Tensor& weight_q,
                                                const torch::Tensor& factor) {
  // The un-fold divides the quantized weight, not the conv output (conv is
  // linear in the weight): one pass over the weight instead of two over the
  // output, and the conv output is not kept for the backward. gamma = 0
  // channels: the float weight (see modules.h). torch::where rather than a
  // branch on the values keeps the path free of host syncs. Same op order as
  // Python's ConvBn2d, so the results are bit for bit the same.
  const auto zero = (factor == 0).reshape({-1, 1, 1, 1});
  const auto safe_factor =
      torch::where(zero, torch::ones_like(weight_q.narrow(1, 0, 1).narrow(2, 0, 1).narrow(3, 0, 1)),
                   factor.reshape({-1, 1, 1, 1}));
  const auto w = torch::where(zero, weight, weight_q / safe_factor);
  const auto y = conv2d(options, x, w, bias);
  return bn(y);
}

void ConvBn2dImpl::pretty_print(std::ostream& stream) const {
  stream << "edgeqat::nn::ConvBn2d(";
  print_conv_geometry(stream, options);
  stream << ", activation='" << activation_name(options.activation())
         << "', bn_frozen=" << (bn_frozen.defined() && is_bn_frozen() ? "true" : "false") << ")";
}

// ---------------------------------------------------------------------------
// ActQuant, SharedActQuant, QuantAdd
// ---------------------------------------------------------------------------

ActQuantImpl::ActQuantImpl(const QConfig& config_, Activation activation_)
    : config(config_), activation(activation_) {
  check_activation(activation, "ActQuant");
  reset();
}

void ActQuantImpl::reset() {
  quantizer = register_module("quantizer", FakeQuantizer(config.activation()));
}

torch::Tensor ActQuantImpl::forward(const torch::Tensor& x) {
  if (activation == Activation::Identity) return quantizer(x);
  if (can_fuse_activation()) return fused_activation_forward(x);
  // Not in place: x may be a tensor other code still reads.
  return quantizer(activation == Activation::ReLU ? torch::relu(x) : torch::hardtanh(x, 0.0, 6.0));
}

bool ActQuantImpl::can_fuse_activation() const {
  const auto& spec = quantizer->spec();
  const Mode mode = quantizer->mode();
  if ((mode != Mode::Observe && mode != Mode::Frozen) || spec.symmetric() || spec.per_channel() ||
      spec.range_source() == RangeSource::Histogram) {
    return false;
  }
  // The observed range must lie in the activation's output range (true by
  // construction: it is observed on activation(x); Python checks it when a
  // state_dict is loaded). Unobserved entries are (inf, -inf).
  const auto& lo = quantizer->observed_min;
  const auto& hi = quantizer->observed_max;
  auto inside = lo.ge(0.0);
  if (activation == Activation::ReLU6) inside = inside.logical_and(hi.le(6.0));
  return inside.logical_or(lo.gt(hi)).all().item<bool>();
}

torch::Tensor ActQuantImpl::fused_activation_forward(const torch::Tensor& x) {
  // As Python's ActQuant._fused_activation_forward: the observer sees
  // activation(x) (observe_fake_quant_'s clamp bounds: [0, inf) or [0, 6]);
  // the asymmetric range made from it has lower end exactly 0 (and upper end
  // <= 6 for ReLU6), so fake-quantizing x clamps like the activation would.
  if (quantizer->mode() == Mode::Observe && quantizer->is_training()) {
    return quantizer->observe_and_quantize(
        x, 0.0, activation == Activation::ReLU6 ? std::optional<double>(6.0) : std::nullopt);
  }
  const auto& spec = quantizer->spec();
  auto [lo, hi] = quantizer->observed_range();
  return edgeqat::fake_quant_with_min_max_vars(x, lo.to(x.device()), hi.to(x.device()),
                                               spec.num_bits(), spec.narrow_range());
}

void ActQuantImpl::pretty_print(std::ostream& stream) const {
  stream << "edgeqat::nn::ActQuant(activation='" << activation_name(activation) << "')";
}

SharedActQuantImpl::SharedActQuantImpl(ActQuant source_) : source(std::move(source_)) {
  TORCH_CHECK_VALUE(!source.is_empty(),
                    "SharedActQuant: source must be an ActQuant, got an empty holder (nullptr)");
}

std::shared_ptr<torch::nn::Module> SharedActQuantImpl::clone(
    const std::optional<torch::Device>& /*device*/) const {
  TORCH_CHECK(false,
              "SharedActQuant cannot be cloned: the copy would still use the original model's "
              "source quantizer; build a new model and torch::load the state into it instead");
  return nullptr;
}

torch::Tensor SharedActQuantImpl::forward(const torch::Tensor& x) {
  // As Python's SharedActQuant.forward: the source's current range, never an update.
  const auto& q = source->quantizer;
  const Mode mode = q->mode();
  if (mode == Mode::Off) return x;
  // While a histogram source calibrates (in float), so does this: the identity.
  if (mode == Mode::Observe && q->is_training() &&
      q->spec().range_source() == RangeSource::Histogram) {
    return x;
  }
  auto [lo, hi] = mode == Mode::Learn ? q->learned_range() : q->observed_range();
  return edgeqat::fake_quant_with_min_max_vars(x, lo.to(x.device()), hi.to(x.device()),
                                               q->spec().num_bits(), q->spec().narrow_range());
}

void SharedActQuantImpl::pretty_print(std::ostream& stream) const {
  stream << "edgeqat::nn::SharedActQuant()";
}

QuantAddOptions& QuantAddOptions::activation(const std::string& value) {
  activation_ = parse_activation(value, "QuantAdd");
  return *this;
}

QuantAddImpl::QuantAddImpl(const QuantAddOptions& options_) : options(options_) {
  check_activation(options.activation(), "QuantAdd");
  reset();
}

void QuantAddImpl::reset() {
  // The output quantizer applies the activation (fused into its fake quant).
  out_quant = register_module("out_quant", ActQuant(options.config(), options.activation()));
}

torch::Tensor QuantAddImpl::forward(const torch::Tensor& a, const torch::Tensor& b) {
  return out_quant(a + b);
}

void QuantAddImpl::pretty_print(std::ostream& stream) const {
  stream << "edgeqat::nn::QuantAdd(activation='" << activation_name(options.activation()) << "')";
}

// ---------------------------------------------------------------------------
// Residual
// ---------------------------------------------------------------------------

ResidualOptions& ResidualOptions::activation(const std::string& value) {
  activation_ = parse_activation(value, "Residual");
  return *this;
}

ResidualImpl::ResidualImpl(torch::nn::Sequential body_, torch::nn::Sequential shortcut_,
                           const ResidualOptions& options_)
    : options(options_), body(std::move(body_)), shortcut(std::move(shortcut_)) {
  TORCH_CHECK_VALUE(!body.is_empty(),
                    "Residual: body must be a module, got an empty Sequential holder (nullptr)");
  check_activation(options.activation(), "Residual");
  reset();
}

void ResidualImpl::reset() {
  body = register_module("body", body);
  if (!shortcut.is_empty()) shortcut = register_module("shortcut", shortcut);
  add = register_module(
      "add", QuantAdd(QuantAddOptions().config(options.config()).activation(options.activation())));
}

std::shared_ptr<torch::nn::Module> ResidualImpl::clone(
    const std::optional<torch::Device>& device) const {
  auto clone_of = [&](const torch::nn::Sequential& seq) {
    return torch::nn::Sequential(
        std::dynamic_pointer_cast<torch::nn::SequentialImpl>(seq->clone(device)));
  };
  // Built around placeholders, so that train() does not touch the clones' own
  // training flags; then the clones replace the placeholders (same order).
  auto copy = std::make_shared<ResidualImpl>(
      torch::nn::Sequential(), shortcut.is_empty() ? nullptr : torch::nn::Sequential(), options);
  copy->train(is_training());
  copy->body = copy->replace_module("body", clone_of(body));
  if (!shortcut.is_empty()) copy->shortcut = copy->replace_module("shortcut", clone_of(shortcut));
  copy->add = copy->replace_module(
      "add", QuantAdd(std::dynamic_pointer_cast<QuantAddImpl>(add->clone(device))));
  return copy;
}

torch::Tensor ResidualImpl::forward(const torch::Tensor& x) {
  const auto y = body->forward(x);
  return add(y, shortcut.is_empty() ? x : shortcut->forward(x));
}

void ResidualImpl::pretty_print(std::ostream& stream) const {
  stream << "edgeqat::nn::Residual(activation='" << activation_name(options.activation())
         << "', shortcut=" << (shortcut.is_empty() ? "identity" : "module") << ")";
}

// ---------------------------------------------------------------------------
// Model controls
// ---------------------------------------------------------------------------

namespace {

using NamedQuantizers = std::vector<std::pair<std::string, FakeQuantizerImpl*>>;

// The model itself and every submodule, by name ("" for the model). Raw
// pointers: Module::modules() with the model included needs the model to be
// owned by a shared_ptr, which a plain `Net net;` is not.
std::vector<std::pair<std::string, torch::nn::Module*>> all_modules(torch::nn::Module& model) {
  std::vector<std::pair<std::string, torch::nn::Module*>> all{{"", &model}};
  for (const auto& item : model.named_modules(/*name_prefix=*/"", /*include_self=*/false)) {
    all.emplace_back(item.key(), item.value().get());
  }
  return all;
}

NamedQuantizers quantizers_in(torch::nn::Module& model, std::initializer_list<Mode> modes) {
  NamedQuantizers found;
  for (const auto& [name, module] : all_modules(model)) {
    auto* q = dynamic_cast<FakeQuantizerImpl*>(module);
    if (q == nullptr) continue;
    const Mode mode = q->mode();
    for (const Mode m : modes) {
      if (mode == m) {
        found.emplace_back(name, q);
        break;
      }
    }
  }
  return found;
}

// Checked for all before any mode changes, so a failed call leaves the model as it was.
void require_ranges(const NamedQuantizers& quantizers, const char* what) {
  std::string missing;
  for (const auto& [name, q] : quantizers) {
    if (q->has_range()) continue;
    if (!missing.empty()) missing += ", ";
    missing += name.empty() ? "<model>" : name;
  }
  TORCH_CHECK(missing.empty(), what, ": these quantizers have not observed data yet: ", missing,
              "; run data through the model in training mode first");
}

}  // namespace

torch::nn::Module& freeze_bn(torch::nn::Module& model) {
  for (const auto& item : all_modules(model)) {
    if (auto* m = dynamic_cast<ConvBn2dImpl*>(item.second)) m->freeze_bn();
  }
  return model;
}
torch::nn::Module& freeze_observers(torch::nn::Module& model) {
  const auto quantizers = quantizers_in(model, {Mode::Observe});
  require_ranges(quantizers, "freeze_observers");
  for (const auto& item : quantizers) item.second->freeze();
  return model;
}

torch::nn::Module& learn_ranges(torch::nn::Module& model) {
  const auto quantizers = quantizers_in(model, {Mode::Observe, Mode::Frozen});
  require_ranges(quantizers, "learn_ranges");
  for (const auto& item : quantizers) item.second->learn();
  return model;
}

torch::nn::Module& observe(torch::nn::Module& model) {
  for (const auto& item : quantizers_in(model, {Mode::Observe, Mode::Frozen, Mode::Learn})) {
    item.second->observe();
  }
  return model;
}

}  // namespace edgeqat::nn
