// Quantized training-time modules for LibTorch: the C++ twins of Python's
// edgeqat.nn (python/edgeqat/nn/*.py), plus a Residual block.
//
//  - QuantLinear, QuantConv2d: float weights fake-quantized per output channel.
//  - ConvBn2d: conv + batch norm (+ ReLU / ReLU6) trained with the fold the int8 model uses.
//  - ActQuant: the quantizer of an activation tensor; SharedActQuant rounds to
//    another one's grid (average pooling).
//  - QuantAdd: the quantized residual add (optional fused ReLU / ReLU6).
//  - Residual: out = QuantAdd(body(x), shortcut(x)), identity shortcut by default.
//
// Parameter, buffer and submodule names are Python's, so a Python state_dict
// maps 1:1 onto named_parameters() / named_buffers(), and the forward passes
// run the same ops in the same order: the same weights and inputs give
// bit-identical outputs, gradients and optimizer steps on both sides.
// Everything is torch::save / torch::load-able; all state (observed ranges,
// modes, BN statistics, bn_frozen) is in parameters and buffers.
#pragma once

#include <torch/arg.h>
#include <torch/expanding_array.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/options/conv.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <utility>

#include "edgeqat/nn/config.h"
#include "edgeqat/nn/quantizer.h"

namespace edgeqat::nn {

// The activation after ConvBn2d or after Residual's add. Identity is Python's
// activation=None.
enum class Activation { Identity, ReLU, ReLU6 };

// "none", "relu" or "relu6" (Python: None, "relu", "relu6").
const char* activation_name(Activation activation);

class ActQuantImpl;
class ActQuant;
class SharedActQuant;

// The int32 bias. The int8 model adds a conv / linear bias as an int32 at the accumulator's
// scale s = s_in * s_w[c] (the input's scale times output channel c's weight scale). A
// QuantLinear / QuantConv2d / ConvBn2d linked to the ActQuant of its input
// (set_input_quantizer; a SharedActQuant links its source) and with config.quantize_bias()
// (default) adds exactly that bias, round(b / s) * s, instead of the float b: the nudged
// scales of the ranges used in this forward (the input quantizer's; the weight quantizer's,
// after it observed this weight; learned ones in Learn mode), computed as the exporter's
// GraphBuilder does (float32 scales, float64 quotient, ties away from zero, clamped to
// +-(2^31 - 1)); gradient straight through to b, none to the ranges. ConvBn2d: the folded bias
// b' once BN is frozen and in eval mode (with batch statistics the conv's float bias, as
// before: BN removes any per-channel constant). The float bias where the int8 model is not
// simulated: not linked, either quantizer Off or without a range, or the input quantizer a
// histogram source calibrating. Python's set_input_quantizer (python/edgeqat/nn/_bias.py),
// op for op, so both give the same bits.
//
// The link is not registered (no parameters, buffers or children: the quantizer belongs to the
// part of the model that produced the input). clone() of a linked layer is refused, as
// SharedActQuant's: the copy would still read the original model's quantizer.

// ---------------------------------------------------------------------------
// QuantLinear
// ---------------------------------------------------------------------------

struct QuantLinearOptions {
  QuantLinearOptions(int64_t in_features, int64_t out_features)
      : in_features_(in_features), out_features_(out_features) {}
  TORCH_ARG(int64_t, in_features);
  TORCH_ARG(int64_t, out_features);
  TORCH_ARG(bool, bias) = true;
  TORCH_ARG(QConfig, config);
};

// linear(x, weight_quant(weight), bias). The weight is fake-quantized by
// weight_quant (config.weight(): by default 8 bits, symmetric, narrow range,
// one range per output channel, the range of the current weight); the bias is
// the int8 model's int32 bias when linked to the input's ActQuant (above), the
// float one otherwise. Initialised as torch::nn::Linear.
//
// Names: weight [out_features, in_features], bias [out_features] (if bias),
// weight_quant.{observed_min, observed_max, learned_min, learned_max, mode_code}.
// Shapes: input [*, in_features], output [*, out_features].
//
//   edgeqat::nn::QuantLinear fc(16, 4);
//   auto y = fc(torch::randn({8, 16}));  // [8, 4]; training mode observes the weight
class QuantLinearImpl : public torch::nn::Cloneable<QuantLinearImpl> {
 public:
  QuantLinearImpl(int64_t in_features, int64_t out_features)
      : QuantLinearImpl(QuantLinearOptions(in_features, out_features)) {}
  explicit QuantLinearImpl(const QuantLinearOptions& options);

  void reset() override;
  // Kaiming-uniform weight, bias uniform in +-1/sqrt(in_features), as torch::nn::Linear.
  void reset_parameters();
  torch::Tensor forward(const torch::Tensor& x);
  void pretty_print(std::ostream& stream) const override;
  // Refused while linked (see set_input_quantizer).
  std::shared_ptr<torch::nn::Module> clone(
      const std::optional<torch::Device>& device = std::nullopt) const override;

  // Links the ActQuant of this layer's input (the int32 bias, above); an empty
  // holder (nullptr) unlinks. A SharedActQuant links its source.
  QuantLinearImpl& set_input_quantizer(const ActQuant& quantizer);
  QuantLinearImpl& set_input_quantizer(const SharedActQuant& quantizer);
  // The linked ActQuant, an empty holder when not linked.
  ActQuant input_quantizer() const;

  QuantLinearOptions options;
  torch::Tensor weight, bias;  // bias undefined without bias
  FakeQuantizer weight_quant{nullptr};

 private:
  std::shared_ptr<ActQuantImpl> input_quantizer_;  // not registered
};
TORCH_MODULE(QuantLinear);

// ---------------------------------------------------------------------------
// QuantConv2d
// ---------------------------------------------------------------------------

// Zero padding only: the int8 conv pads with real 0. padding takes numbers or
// torch::kValid / torch::kSame (stride 1), as torch::nn::Conv2dOptions.
struct QuantConv2dOptions {
  using padding_t = torch::nn::detail::conv_padding_t<2>;
  QuantConv2dOptions(int64_t in_channels, int64_t out_channels,
                     torch::ExpandingArray<2> kernel_size)
      : in_channels_(in_channels), out_channels_(out_channels), kernel_size_(kernel_size) {}
  TORCH_ARG(int64_t, in_channels);
  TORCH_ARG(int64_t, out_channels);
  TORCH_ARG(torch::ExpandingArray<2>, kernel_size);
  TORCH_ARG(torch::ExpandingArray<2>, stride) = 1;
  TORCH_ARG(padding_t, padding) = 0;
  TORCH_ARG(torch::ExpandingArray<2>, dilation) = 1;
  TORCH_ARG(int64_t, groups) = 1;
  TORCH_ARG(bool, bias) = true;
  TORCH_ARG(QConfig, config);
};

// conv2d(x, weight_quant(weight), bias, stride, padding, dilation, groups):
// any geometry (depthwise: groups = in_channels), weight fake-quantized per
// output channel as in QuantLinear; the bias is the int8 model's int32 bias
// when linked to the input's ActQuant (above), the float one otherwise.
// Initialised as torch::nn::Conv2d.
//
// Names: weight [out_channels, in_channels / groups, kH, kW], bias [out_channels]
// (if bias), weight_quant.*.
// Shapes: input [N, in_channels, H, W] (or unbatched [in_channels, H, W]).
//
//   edgeqat::nn::QuantConv2d dw(
//       edgeqat::nn::QuantConv2dOptions(32, 32, 3).stride(2).padding(1).groups(32));
//   auto y = dw(torch::randn({2, 32, 16, 16}));  // [2, 32, 8, 8]
class QuantConv2dImpl : public torch::nn::Cloneable<QuantConv2dImpl> {
 public:
  QuantConv2dImpl(int64_t in_channels, int64_t out_channels, torch::ExpandingArray<2> kernel_size)
      : QuantConv2dImpl(QuantConv2dOptions(in_channels, out_channels, kernel_size)) {}
  explicit QuantConv2dImpl(const QuantConv2dOptions& options);

  void reset() override;
  // As torch::nn::Conv2d: Kaiming-uniform weight, bias uniform in +-1/sqrt(fan_in).
  void reset_parameters();
  torch::Tensor forward(const torch::Tensor& x);
  void pretty_print(std::ostream& stream) const override;
  // Refused while linked (see set_input_quantizer).
  std::shared_ptr<torch::nn::Module> clone(
      const std::optional<torch::Device>& device = std::nullopt) const override;

  // As QuantLinear's: the ActQuant of the input, for the int32 bias.
  QuantConv2dImpl& set_input_quantizer(const ActQuant& quantizer);
  QuantConv2dImpl& set_input_quantizer(const SharedActQuant& quantizer);
  ActQuant input_quantizer() const;

  QuantConv2dOptions options;
  torch::Tensor weight, bias;  // bias undefined without bias
  FakeQuantizer weight_quant{nullptr};

 private:
  std::shared_ptr<ActQuantImpl> input_quantizer_;  // not registered
};
TORCH_MODULE(QuantConv2d);

// ---------------------------------------------------------------------------
// ConvBn2d
// ---------------------------------------------------------------------------

struct ConvBn2dOptions {
  using padding_t = torch::nn::detail::conv_padding_t<2>;
  ConvBn2dOptions(int64_t in_channels, int64_t out_channels, torch::ExpandingArray<2> kernel_size)
      : in_channels_(in_channels), out_channels_(out_channels), kernel_size_(kernel_size) {}
  TORCH_ARG(int64_t, in_channels);
  TORCH_ARG(int64_t, out_channels);
  TORCH_ARG(torch::ExpandingArray<2>, kernel_size);
  TORCH_ARG(torch::ExpandingArray<2>, stride) = 1;
  TORCH_ARG(padding_t, padding) = 0;
  TORCH_ARG(torch::ExpandingArray<2>, dilation) = 1;
  TORCH_ARG(int64_t, groups) = 1;
  // The conv's own bias; usually none before a BN.
  TORCH_ARG(bool, bias) = false;
  // BN's eps (positive) and momentum (in [0, 1]; nullopt: cumulative average),
  // as torch::nn::BatchNorm2d.
  TORCH_ARG(double, eps) = 1e-5;
  TORCH_ARG(std::optional<double>, momentum) = 0.1;
  TORCH_ARG(QConfig, config);

 public:
  ConvBn2dOptions& activation(Activation value) {
    activation_ = value;
    return *this;
  }
  // "none", "relu" or "relu6"; anything else is an error naming the value.
  ConvBn2dOptions& activation(const std::string& value);
  Activation activation() const { return activation_; }

 private:
  Activation activation_ = Activation::Identity;
};

// Conv2d + BatchNorm2d + optional ReLU / ReLU6, with BN folded into the
// quantized weight (Python's edgeqat.ConvBn2d; int8-numerics.md section 6).
//
// The int8 model runs conv(x, W') + b' with the inference fold
//   f = gamma / sqrt(running_var + eps)   (per output channel),
//   W' = W * f,  b' = (b - running_mean) * f + beta   (b = 0 without a conv bias),
// and weight_quant always sees W' (running statistics). forward:
//  - training mode, BN not frozen: y = conv(x, fq(W') / f, b), then bn(y)
//    with batch statistics, updating the running statistics exactly as
//    torch::nn::BatchNorm2d (momentum, num_batches_tracked);
//  - after freeze_bn(), or in eval mode: conv(x, fq(W'), b'), exactly the
//    graph the int8 export computes; running statistics no longer change.
// then the activation (ReLU6 = clamp(y, 0, 6)).
//    (the un-fold on the weight: PyTorch's conv(x, fq(W')) / f + b up to
//    float rounding, with one pass over the weight instead of the output);
// gamma = 0 channels (f = 0): the training path uses the float weight there
// instead of fq(W') / f, so no 0 / 0; BN's output for the channel is still beta.
// Linked to the input's ActQuant (set_input_quantizer, see "The int32 bias"
// above), b' is the int8 model's int32 bias; the batch-statistics path keeps b.
//
// Names: weight, bias (if bias), weight_quant.*, bn.{weight, bias,
// running_mean, running_var, num_batches_tracked}, bn_frozen (bool 0-dim buffer).
// Shapes: input [N, in_channels, H, W], output [N, out_channels, H_out, W_out].
//
//   edgeqat::nn::ConvBn2d m(edgeqat::nn::ConvBn2dOptions(3, 16, 3).padding(1).activation("relu"));
//   auto y = m(torch::randn({8, 3, 32, 32}));  // BN with batch statistics, weights folded
//   m->freeze_bn();                            // from now on: conv(x, fq(W')) + b'
//   auto [w_fold, b_fold] = m->folded_weight_and_bias();
class ConvBn2dImpl : public torch::nn::Cloneable<ConvBn2dImpl> {
 public:
  ConvBn2dImpl(int64_t in_channels, int64_t out_channels, torch::ExpandingArray<2> kernel_size)
      : ConvBn2dImpl(ConvBn2dOptions(in_channels, out_channels, kernel_size)) {}
  explicit ConvBn2dImpl(const ConvBn2dOptions& options);

  void reset() override;
  // Conv weight / bias as torch::nn::Conv2d; BN as torch::nn::BatchNorm2d.
  void reset_parameters();
  torch::Tensor forward(const torch::Tensor& x);
  void pretty_print(std::ostream& stream) const override;

  // Stop updating the running statistics and train the folded inference graph.
  ConvBn2dImpl& freeze_bn();
  // Back to batch statistics in training mode.
  ConvBn2dImpl& unfreeze_bn();
  bool is_bn_frozen() const;

  // (W', b') with the running statistics, detached: W'
  // [out_channels, in_channels / groups, kH, kW] (float, not quantized:
  // quantize with weight_quant->quant_range()), b' [out_channels].
  std::pair<torch::Tensor, torch::Tensor> folded_weight_and_bias() const;

  // Refused while linked (see set_input_quantizer).
  std::shared_ptr<torch::nn::Module> clone(
      const std::optional<torch::Device>& device = std::nullopt) const override;
  // As QuantLinear's: the ActQuant of the input, for the int32 bias b'.
  ConvBn2dImpl& set_input_quantizer(const ActQuant& quantizer);
  ConvBn2dImpl& set_input_quantizer(const SharedActQuant& quantizer);
  ActQuant input_quantizer() const;

  ConvBn2dOptions options;
  torch::Tensor weight, bias;  // bias undefined without bias
  FakeQuantizer weight_quant{nullptr};
  torch::nn::BatchNorm2d bn{nullptr};
  torch::Tensor bn_frozen;

 private:
  torch::Tensor fold_factor() const;
  torch::Tensor folded_bias(const torch::Tensor& factor) const;
  // folded_bias(factor), the int8 model's int32 bias when linked.
  torch::Tensor folded_bias_for_forward(const torch::Tensor& factor) const;
  torch::Tensor forward_batch_stats(const torch::Tensor& x, const torch::Tensor& weight_q,
                                    const torch::Tensor& factor);

  std::shared_ptr<ActQuantImpl> input_quantizer_;  // not registered
};
TORCH_MODULE(ConvBn2d);

// ---------------------------------------------------------------------------
// ActQuant, SharedActQuant, QuantAdd
// ---------------------------------------------------------------------------

// Fake-quantizes an activation tensor (the model input, or the output of a
// conv, linear, add or pool) with config.activation(): one range per tensor.
// With an activation (ReLU / ReLU6) it computes fq(activation(x)): the
// activation of the layer before it, exported as that layer's output clamp.
// With an asymmetric per-tensor range in Observe or Frozen mode the activation
// is fused into the fake quant (observe activation(x)'s range, then
// fake-quantize x: the same values bit for bit, one pass over the tensor and
// one saved tensor fewer; the gradient differs only at x == 0 exactly, and
// x == 6 for ReLU6); otherwise it is applied first. Python's edgeqat.ActQuant.
// Names: quantizer.*. Shape: any; the output has the input's shape and dtype.
class ActQuantImpl : public torch::nn::Cloneable<ActQuantImpl> {
 public:
  explicit ActQuantImpl(const QConfig& config = QConfig(),
                        Activation activation = Activation::Identity);
  void reset() override;
  torch::Tensor forward(const torch::Tensor& x);
  void pretty_print(std::ostream& stream) const override;

  QConfig config;
  Activation activation;
  FakeQuantizer quantizer{nullptr};

 private:
  bool can_fuse_activation() const;
  torch::Tensor fused_activation_forward(const torch::Tensor& x);
};
TORCH_MODULE(ActQuant);

// Fake-quantizes with the range of another ActQuant (its source) and never
// observes: for ops whose int8 output must keep their input's scale and zero
// point (average pooling, TFLite spec), the output is rounded to the input's
// grid. Python's edgeqat.nn.SharedActQuant.
//
// The source is not registered as a submodule (it belongs to, and is saved
// with, the part of the model that produced the input): this module has no
// parameters, buffers or children. In Learn mode gradients reach the source's
// learned range through this use too. clone() is refused: a copy would still
// point at the original's source; rebuild the model and torch::load a state.
//
//   edgeqat::nn::ActQuant aq;
//   edgeqat::nn::SharedActQuant pool_quant(aq);
//   auto y = pool_quant(torch::adaptive_avg_pool2d(aq(x), 1));
class SharedActQuantImpl : public torch::nn::Cloneable<SharedActQuantImpl> {
 public:
  explicit SharedActQuantImpl(ActQuant source);
  void reset() override {}
  std::shared_ptr<torch::nn::Module> clone(
      const std::optional<torch::Device>& device = std::nullopt) const override;
  torch::Tensor forward(const torch::Tensor& x);
  void pretty_print(std::ostream& stream) const override;

  ActQuant source;  // not registered
};
TORCH_MODULE(SharedActQuant);

struct QuantAddOptions {
  // Config of the output quantizer.
  TORCH_ARG(QConfig, config);

 public:
  QuantAddOptions& activation(Activation value) {
    activation_ = value;
    return *this;
  }
  // "none", "relu" or "relu6".
  QuantAddOptions& activation(const std::string& value);
  Activation activation() const { return activation_; }

 private:
  Activation activation_ = Activation::Identity;
};

// out_quant(activation(a + b)): the int8 model's ADD, whose output has its own
// scale and zero point (TFLite's ADD rescales both inputs to the output's
// parameters and clamps to its fused activation). The activation (default
// none) comes before the output quantizer, so the output range is the
// activation's; out_quant applies it (fused into its fake quant, see ActQuant). The inputs are not
// quantized here: each is assumed to be quantized by its producer's ActQuant. Python's
// edgeqat.QuantAdd. Names: out_quant.quantizer.*. Shapes: a and b broadcastable.
//
//   edgeqat::nn::QuantAdd add(edgeqat::nn::QuantAddOptions().activation("relu"));
//   auto y = add(x, block(x));  // a quantized residual connection, ResNet style
class QuantAddImpl : public torch::nn::Cloneable<QuantAddImpl> {
 public:
  explicit QuantAddImpl(const QuantAddOptions& options = QuantAddOptions());
  explicit QuantAddImpl(const QConfig& config) : QuantAddImpl(QuantAddOptions().config(config)) {}
  void reset() override;
  torch::Tensor forward(const torch::Tensor& a, const torch::Tensor& b);
  void pretty_print(std::ostream& stream) const override;

  QuantAddOptions options;
  ActQuant out_quant{nullptr};
};
TORCH_MODULE(QuantAdd);

// ---------------------------------------------------------------------------
// Residual
// ---------------------------------------------------------------------------

struct ResidualOptions {
  // Config of the add's output quantizer.
  TORCH_ARG(QConfig, config);

 public:
  // The add's fused activation (see QuantAdd).
  ResidualOptions& activation(Activation value) {
    activation_ = value;
    return *this;
  }
  // "none", "relu" or "relu6".
  ResidualOptions& activation(const std::string& value);
  Activation activation() const { return activation_; }

 private:
  Activation activation_ = Activation::Identity;
};

// A residual block (ResNet basic block, MobileNetV2 inverted residual):
//   out = add(body(x), shortcut(x)) = add->out_quant(activation(body(x) + shortcut(x)))
// with add a QuantAdd carrying the block's activation (fused into the add, as
// TFLite's ADD with a fused activation: the output range is observed on the
// activated sum, no grid steps spent on negatives) and an identity shortcut
// when none is given. Python has no Residual class: the same block there is a
// module holding `body`, an optional `shortcut` and `add = QuantAdd(config,
// activation=...)` whose forward returns add(body(x), shortcut(x)).
//
// The add does not quantize its inputs (see QuantAdd): end body (and a
// non-identity shortcut) with an ActQuant, as the int8 graph gives each input
// of the add its producer's scale; an identity shortcut passes x, already
// quantized by whatever produced it.
//
// Names: body.<i>.*, shortcut.<i>.* (if a shortcut is given),
// add.out_quant.quantizer.*.
//
//   using namespace edgeqat::nn;
//   torch::nn::Sequential body(
//       ConvBn2d(ConvBn2dOptions(16, 16, 3).padding(1).activation("relu")), ActQuant(),
//       ConvBn2d(ConvBn2dOptions(16, 16, 3).padding(1)), ActQuant());
//   Residual block(body, /*shortcut=*/nullptr, ResidualOptions().activation("relu"));
class ResidualImpl : public torch::nn::Cloneable<ResidualImpl> {
 public:
  explicit ResidualImpl(torch::nn::Sequential body, torch::nn::Sequential shortcut = nullptr,
                        const ResidualOptions& options = ResidualOptions());

  void reset() override;
  // A deep copy: body and shortcut are cloned too (Cloneable's default would
  // share them).
  std::shared_ptr<torch::nn::Module> clone(
      const std::optional<torch::Device>& device = std::nullopt) const override;
  torch::Tensor forward(const torch::Tensor& x);
  void pretty_print(std::ostream& stream) const override;

  ResidualOptions options;
  torch::nn::Sequential body{nullptr};
  torch::nn::Sequential shortcut{nullptr};  // empty: identity
  QuantAdd add{nullptr};
};
TORCH_MODULE(Residual);

}  // namespace edgeqat::nn
