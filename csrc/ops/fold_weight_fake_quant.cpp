// Schema and C++ API of the folded-weight fake quant, ConvBn2d's weight path in one op:
//
//   fold_weight_fake_quant_(Tensor(a!) observed_min, Tensor(b!) observed_max, Tensor weight,
//                           Tensor factor, bool observe, float averaging_constant=1.0,
//                           bool accumulate=False, bool symmetric=False, int num_bits=8,
//                           bool narrow_range=False, bool unfold=False) -> Tensor
//
//   weight: [C, ...] floating (a conv weight: output channels in dim 0);
//   factor: [C], weight's dtype: the BN fold factor f = gamma / sqrt(running_var + eps),
//           differentiable (the caller computes it, so gradients reach gamma);
//   observed_min / observed_max: the weight quantizer's state, [C] (per output channel,
//           axis 0) or 0-dim (per tensor), any floating dtype, not differentiable.
//
// It computes, bit for bit, what ConvBn2d computed with separate ops:
//  1. Wf = weight * f, broadcast per output channel (the float multiply of
//     `weight * factor.reshape(-1, 1, 1, 1)`);
//  2. if observe: observe_min_max_(observed_min, observed_max, Wf, axis 0 or None,
//     averaging_constant, accumulate), the state update of observe_fake_quant_;
//  3. the range from the state as FakeQuantizer._derived_range: [min(lo, 0), max(hi, 0)],
//     [-b, b] with b = max(-lo, hi) when symmetric;
//  4. Wq = fake_quant_with_min_max_vars[_per_channel](Wf, range, num_bits, narrow_range);
//  5. output = Wq if not unfold; else, per output channel, Wq / f, or weight itself where
//     f == 0 (exactly 0: the gamma = 0 rule of ConvBn2d, no 0 / 0).
// Gradients (C++ autograd, saving the nudged range it quantized with, weight, factor and, to
// un-fold, the output: no weight-sized mask, the backward recomputes W * f), with
// m = "Wf inside the nudged range":
//  - unfold, f != 0: grad_weight = (m ? g / f : 0) * f,
//    grad_factor[c] = sum((m ? g / f : 0) * weight) + sum(-g * (output / f));
//  - unfold, f == 0: grad_weight = g, grad_factor[c] = 0;
//  - not unfold: grad_weight = (m ? g : 0) * f, grad_factor[c] = sum((m ? g : 0) * weight).
// Every element is rounded as autograd rounds it through the unfused ops, so grad_weight is
// bit for bit the unfused one. The sums differ in order: the fused CPU kernel adds the float
// terms of a channel in double and rounds once (more accurate than autograd's float sums; they
// agree within a few float ulps of the sum of the terms' magnitudes), the composite kernel
// calls at::sum as autograd does (bit for bit). The state gets no gradient and must not
// require grad. No double backward: asking for one is an error.
//
// The fused CPU kernel walks each output channel's block of the weight twice while it is in
// cache (min / max of W * f, then the output) with channels in parallel; per tensor, the
// first walk covers every channel before the range exists. The backward is one walk per
// channel. Other devices, Meta, and the cases the CPU kernel leaves aside run the composite
// kernel (composite/fold_weight_fake_quant_kernel.cpp): the unfused ops themselves.
#include "fold_weight_fake_quant.h"

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <vector>

#include "edgeqat/ops.h"
#include "fake_quant.h"

namespace edgeqat {
namespace ops {
namespace {

void check_state(const char* name, const at::Tensor& state, const at::Tensor& weight) {
  const char* op = kFoldWeightFakeQuantOp;
  TORCH_CHECK(at::isFloatingType(state.scalar_type()), op, ": ", name,
              " must be a floating-point tensor, got dtype ", state.scalar_type());
  TORCH_CHECK(state.device() == weight.device(), op, ": ", name, " is on ", state.device(),
              " but weight is on ", weight.device());
  TORCH_CHECK(state.dim() == 0 || (state.dim() == 1 && state.sym_size(0) == weight.sym_size(0)),
              op, ": ", name,
              " must be 0-dim (per tensor) or 1-D of length weight.size(0) = ",
              weight.sym_size(0), " (per output channel), got shape ", state.sym_sizes());
}

}  // namespace

std::optional<int64_t> check_fold_weight_args(const at::Tensor& observed_min,
                                              const at::Tensor& observed_max,
                                              const at::Tensor& weight, const at::Tensor& factor,
                                              double averaging_constant, int64_t num_bits) {
  const char* op = kFoldWeightFakeQuantOp;
  TORCH_CHECK(at::isFloatingType(weight.scalar_type()), op,
              ": weight must be a floating-point tensor, got dtype ", weight.scalar_type());
  TORCH_CHECK(weight.dim() >= 1, op,
              ": weight must have at least 1 dimension (output channels first), got a 0-dim "
              "tensor");
  TORCH_CHECK(factor.scalar_type() == weight.scalar_type(), op,
              ": factor must have weight's dtype ", weight.scalar_type(), ", got dtype ",
              factor.scalar_type());
  TORCH_CHECK(factor.device() == weight.device(), op, ": factor is on ", factor.device(),
              " but weight is on ", weight.device());
  TORCH_CHECK(factor.dim() == 1 && factor.sym_size(0) == weight.sym_size(0), op,
              ": factor must be 1-D of length weight.size(0) = ", weight.sym_size(0),
              " (one fold factor per output channel), got shape ", factor.sym_sizes());
  TORCH_CHECK(averaging_constant > 0.0 && averaging_constant <= 1.0, op,
              ": averaging_constant must be in (0, 1], got ", averaging_constant);
  TORCH_CHECK(num_bits >= 2 && num_bits <= 16, op, ": num_bits must be in [2, 16], got ",
              num_bits);
  check_state("observed_min", observed_min, weight);
  check_state("observed_max", observed_max, weight);
  TORCH_CHECK(observed_min.dim() == observed_max.dim(), op,
              ": observed_min and observed_max must both be per tensor (0-dim) or both per "
              "channel, got shapes ",
              observed_min.sym_sizes(), " and ", observed_max.sym_sizes());
  return observed_min.dim() == 1 ? std::optional<int64_t>(0) : std::nullopt;
}

void check_fold_weight_backward_args(const at::Tensor& grad, const at::Tensor& weight,
                                     const at::Tensor& factor, const at::Tensor& nudged_min,
                                     const at::Tensor& nudged_max,
                                     const std::optional<at::Tensor>& output, bool unfold) {
  const char* op = kFoldWeightBackwardOp;
  TORCH_CHECK(at::isFloatingType(weight.scalar_type()) && weight.dim() >= 1, op,
              ": weight must be a floating-point tensor with at least 1 dimension, got dtype ",
              weight.scalar_type(), " and shape ", weight.sym_sizes());
  TORCH_CHECK(grad.scalar_type() == weight.scalar_type(), op, ": grad must have weight's dtype ",
              weight.scalar_type(), ", got ", grad.scalar_type());
  TORCH_CHECK(factor.scalar_type() == weight.scalar_type(), op,
              ": factor must have weight's dtype ", weight.scalar_type(), ", got ",
              factor.scalar_type());
  TORCH_CHECK(grad.sym_sizes() == weight.sym_sizes(), op, ": grad has shape ", grad.sym_sizes(),
              " but weight has shape ", weight.sym_sizes());
  TORCH_CHECK(factor.dim() == 1 && factor.sym_size(0) == weight.sym_size(0), op,
              ": factor must be 1-D of length weight.size(0) = ", weight.sym_size(0),
              ", got shape ", factor.sym_sizes());
  const auto compute = compute_dtype(weight.scalar_type());
  for (const auto* range : {&nudged_min, &nudged_max}) {
    TORCH_CHECK(range->scalar_type() == compute &&
                    (range->dim() == 0 ||
                     (range->dim() == 1 && range->sym_size(0) == weight.sym_size(0))),
                op, ": nudged_min / nudged_max must be ", compute,
                " tensors, 0-dim or [weight.size(0)], got ", range->scalar_type(), " of shape ",
                range->sym_sizes());
  }
  for (const auto* t : {&grad, &factor, &nudged_min, &nudged_max}) {
    TORCH_CHECK(t->device() == weight.device(), op, ": every tensor must be on weight's device ",
                weight.device(), ", got one on ", t->device());
  }
  if (unfold) {
    TORCH_CHECK(output.has_value() && output->defined(), op,
                ": unfold=True needs the forward output (the un-folded weight)");
    TORCH_CHECK(output->sym_sizes() == weight.sym_sizes() &&
                    output->scalar_type() == weight.scalar_type() &&
                    output->device() == weight.device(),
                op, ": output must have weight's shape, dtype and device, got ",
                output->sym_sizes(), " ", output->scalar_type(), " on ", output->device());
  }
}

at::Tensor factor_as_channels(const at::Tensor& factor, const at::Tensor& weight) {
  std::vector<c10::SymInt> shape(weight.dim(), c10::SymInt(1));
  shape[0] = weight.sym_size(0);
  return factor.reshape_symint(shape);
}

}  // namespace ops

at::Tensor fold_weight_fake_quant_(at::Tensor& observed_min, at::Tensor& observed_max,
                                   const at::Tensor& weight, const at::Tensor& factor,
                                   bool observe, double averaging_constant, bool accumulate,
                                   bool symmetric, int64_t num_bits, bool narrow_range,
                                   bool unfold) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("edgeqat::fold_weight_fake_quant_", "")
                             .typed<decltype(fold_weight_fake_quant_)>();
  return op.call(observed_min, observed_max, weight, factor, observe, averaging_constant,
                 accumulate, symmetric, num_bits, narrow_range, unfold);
}

TORCH_LIBRARY_FRAGMENT(edgeqat, m) {
  const std::vector<at::Tag> tags{at::Tag::pt2_compliant_tag};
  m.def(
      "fold_weight_fake_quant_(Tensor(a!) observed_min, Tensor(b!) observed_max, Tensor weight, "
      "Tensor factor, bool observe, float averaging_constant=1.0, bool accumulate=False, "
      "bool symmetric=False, int num_bits=8, bool narrow_range=False, bool unfold=False) -> "
      "Tensor",
      tags);
  m.def(
      "_fold_weight_fake_quant_nudged_(Tensor(a!) observed_min, Tensor(b!) observed_max, "
      "Tensor weight, Tensor factor, bool observe, float averaging_constant, bool accumulate, "
      "bool symmetric, int num_bits, bool narrow_range, bool unfold) -> "
      "(Tensor output, Tensor nudged_min, Tensor nudged_max)",
      tags);
  m.def(
      "_fold_weight_fake_quant_backward(Tensor grad, Tensor weight, Tensor factor, "
      "Tensor nudged_min, Tensor nudged_max, Tensor? output, bool unfold) -> "
      "(Tensor grad_weight, Tensor grad_factor)",
      tags);
}

}  // namespace edgeqat
