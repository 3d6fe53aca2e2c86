// fold_weight_fake_quant_ under autograd (see ../fold_weight_fake_quant.cpp for the
// gradients). The forward runs _fold_weight_fake_quant_nudged_ below autograd and saves the
// nudged range it returns, weight, factor and, to un-fold, the output; the backward is
// _fold_weight_fake_quant_backward, which is not itself differentiable: a double backward
// (create_graph=True through this op) is an error, not a silently wrong gradient. The observed
// state is not differentiable and must not require grad; it gets its version bumped when the
// op observes.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/csrc/autograd/VariableTypeUtils.h>
#include <torch/library.h>

#include "../fold_weight_fake_quant.h"

namespace edgeqat::ops {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

using Signature = at::Tensor(at::Tensor&, at::Tensor&, const at::Tensor&, const at::Tensor&,
                             bool, double, bool, bool, int64_t, bool, bool);
using NudgedSignature = std::tuple<at::Tensor, at::Tensor, at::Tensor>(
    at::Tensor&, at::Tensor&, const at::Tensor&, const at::Tensor&, bool, double, bool, bool,
    int64_t, bool, bool);
using BackwardSignature = std::tuple<at::Tensor, at::Tensor>(
    const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
    const at::Tensor&, const std::optional<at::Tensor>&, bool);

const c10::TypedOperatorHandle<NudgedSignature>& nudged_op() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("edgeqat::_fold_weight_fake_quant_nudged_", "")
                             .typed<NudgedSignature>();
  return op;
}

const c10::TypedOperatorHandle<BackwardSignature>& backward_op() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("edgeqat::_fold_weight_fake_quant_backward", "")
                             .typed<BackwardSignature>();
  return op;
}

// The state is passed around autograd, not through it.
struct State {
  at::Tensor* observed_min;
  at::Tensor* observed_max;
};

struct Options {
  bool observe;
  double averaging_constant;
  bool accumulate;
  bool symmetric;
  int64_t num_bits;
  bool narrow_range;
  bool unfold;
};

class FoldWeightFakeQuantFunction
    : public torch::autograd::Function<FoldWeightFakeQuantFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& weight,
                               const at::Tensor& factor, State state, Options o) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [output, nudged_min, nudged_max] =
        nudged_op().call(*state.observed_min, *state.observed_max, weight, factor, o.observe,
                         o.averaging_constant, o.accumulate, o.symmetric, o.num_bits,
                         o.narrow_range, o.unfold);
    // The output (the un-folded weight) is saved only to un-fold: the conv keeps it anyway.
    if (o.unfold) {
      ctx->save_for_backward({weight, factor, nudged_min, nudged_max, output});
    } else {
      ctx->save_for_backward({weight, factor, nudged_min, nudged_max});
    }
    ctx->mark_non_differentiable({nudged_min, nudged_max});
    ctx->set_materialize_grads(false);
    ctx->saved_data["unfold"] = o.unfold;
    return {output, nudged_min, nudged_max};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    variable_list grads(4);
    if (!grad_outputs[0].defined()) {
      return grads;
    }
    const bool unfold = ctx->saved_data["unfold"].toBool();
    const auto saved = ctx->get_saved_variables();
    const std::optional<at::Tensor> output =
        unfold ? std::optional<at::Tensor>(saved[4]) : std::nullopt;
    auto [grad_weight, grad_factor] = backward_op().call(grad_outputs[0], saved[0], saved[1],
                                                         saved[2], saved[3], output, unfold);
    grads[0] = ctx->needs_input_grad(0) ? grad_weight : at::Tensor();
    grads[1] = ctx->needs_input_grad(1) ? grad_factor : at::Tensor();
    return grads;
  }
};

void check_state_grad(const at::Tensor& observed_min, const at::Tensor& observed_max) {
  TORCH_CHECK(!(at::GradMode::is_enabled() &&
                (observed_min.requires_grad() || observed_max.requires_grad())),
              kFoldWeightFakeQuantOp,
              ": observed_min and observed_max are observer state and must not require grad");
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> run(at::Tensor& observed_min,
                                                   at::Tensor& observed_max,
                                                   const at::Tensor& weight,
                                                   const at::Tensor& factor, const Options& o,
                                                   bool with_range) {
  check_state_grad(observed_min, observed_max);
  std::tuple<at::Tensor, at::Tensor, at::Tensor> result;
  if (at::GradMode::is_enabled() && (weight.requires_grad() || factor.requires_grad())) {
    auto r = FoldWeightFakeQuantFunction::apply(weight, factor,
                                                State{&observed_min, &observed_max}, o);
    result = {r[0], r[1], r[2]};
  } else {
    at::AutoDispatchBelowADInplaceOrView guard;
    if (with_range) {
      result = nudged_op().call(observed_min, observed_max, weight, factor, o.observe,
                                o.averaging_constant, o.accumulate, o.symmetric, o.num_bits,
                                o.narrow_range, o.unfold);
    } else {
      static const auto op = c10::Dispatcher::singleton()
                                 .findSchemaOrThrow("edgeqat::fold_weight_fake_quant_", "")
                                 .typed<Signature>();
      result = {op.call(observed_min, observed_max, weight, factor, o.observe,
                        o.averaging_constant, o.accumulate, o.symmetric, o.num_bits,
                        o.narrow_range, o.unfold),
                at::Tensor(), at::Tensor()};
    }
  }
  if (o.observe) {
    torch::autograd::increment_version(observed_min);
    torch::autograd::increment_version(observed_max);
  }
  return result;
}

at::Tensor fold_weight_fake_quant_autograd(at::Tensor& observed_min, at::Tensor& observed_max,
                                           const at::Tensor& weight, const at::Tensor& factor,
                                           bool observe, double averaging_constant,
                                           bool accumulate, bool symmetric, int64_t num_bits,
                                           bool narrow_range, bool unfold) {
  return std::get<0>(run(observed_min, observed_max, weight, factor,
                         {observe, averaging_constant, accumulate, symmetric, num_bits,
                          narrow_range, unfold},
                         /*with_range=*/false));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> fold_weight_fake_quant_nudged_autograd(
    at::Tensor& observed_min, at::Tensor& observed_max, const at::Tensor& weight,
    const at::Tensor& factor, bool observe, double averaging_constant, bool accumulate,
    bool symmetric, int64_t num_bits, bool narrow_range, bool unfold) {
  return run(observed_min, observed_max, weight, factor,
             {observe, averaging_constant, accumulate, symmetric, num_bits, narrow_range, unfold},
             /*with_range=*/true);
}

std::tuple<at::Tensor, at::Tensor> fold_weight_fake_quant_backward_autograd(
    const at::Tensor& grad, const at::Tensor& weight, const at::Tensor& factor,
    const at::Tensor& nudged_min, const at::Tensor& nudged_max,
    const std::optional<at::Tensor>& output, bool unfold) {
  const bool any_requires_grad = grad.requires_grad() || weight.requires_grad() ||
                                 factor.requires_grad() ||
                                 (output.has_value() && output->defined() &&
                                  output->requires_grad());
  TORCH_CHECK(!(at::GradMode::is_enabled() && any_requires_grad), kFoldWeightFakeQuantOp,
              ": double backward is not supported (its backward, ", kFoldWeightBackwardOp,
              ", is not differentiable); compute this gradient without create_graph=True, or "
              "use the unfused ops (weight * factor, then the fake-quant op) where a second "
              "derivative is needed");
  at::AutoDispatchBelowADInplaceOrView guard;
  return backward_op().call(grad, weight, factor, nudged_min, nudged_max, output, unfold);
}

}  // namespace

TORCH_LIBRARY_IMPL(edgeqat, Autograd, m) {
  m.impl("fold_weight_fake_quant_", fold_weight_fake_quant_autograd);
  m.impl("_fold_weight_fake_quant_nudged_", fold_weight_fake_quant_nudged_autograd);
  m.impl("_fold_weight_fake_quant_backward", fold_weight_fake_quant_backward_autograd);
}

}  // namespace edgeqat::ops
