// observe_fake_quant_ under autograd. The output differentiates like the
// fake-quant op's with respect to x (straight-through estimator, through the
// saved uint8 mask and _fake_quant_backward, whose own autograd gives double
// backward); the observed state is not differentiable and must not require
// grad. Both state tensors get their version bumped, as any in-place op's.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/csrc/autograd/VariableTypeUtils.h>
#include <torch/library.h>

#include "../observe_fake_quant.h"

namespace edgeqat::ops {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

using Signature = at::Tensor(at::Tensor&, at::Tensor&, const at::Tensor&, std::optional<int64_t>,
                             double, bool, bool, int64_t, bool, std::optional<double>,
                             std::optional<double>);
using CachemaskSignature = std::tuple<at::Tensor, at::Tensor>(
    at::Tensor&, at::Tensor&, const at::Tensor&, std::optional<int64_t>, double, bool, bool,
    int64_t, bool, std::optional<double>, std::optional<double>);

// The observer's clamp bounds (see ../observe_fake_quant.cpp).
struct Clamp {
  std::optional<double> min;
  std::optional<double> max;
};

const c10::TypedOperatorHandle<CachemaskSignature>& cachemask_op() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("edgeqat::_observe_fake_quant_cachemask_", "")
                             .typed<CachemaskSignature>();
  return op;
}

// The state is passed around autograd, not through it: it is neither an
// input to differentiate nor an output.
struct State {
  at::Tensor* observed_min;
  at::Tensor* observed_max;
};

class ObserveFakeQuantFunction : public torch::autograd::Function<ObserveFakeQuantFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, State state,
                               std::optional<int64_t> axis, double averaging_constant,
                               bool accumulate, bool symmetric, int64_t num_bits, bool narrow_range,
                               Clamp clamp) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [output, mask] =
        cachemask_op().call(*state.observed_min, *state.observed_max, x, axis, averaging_constant,
                            accumulate, symmetric, num_bits, narrow_range, clamp.min, clamp.max);
    ctx->save_for_backward({mask});
    ctx->mark_non_differentiable({mask});
    ctx->set_materialize_grads(false);
    ctx->saved_data["axis"] = axis.has_value()
                                  ? std::optional<int64_t>(c10::maybe_wrap_dim(*axis, x.dim()))
                                  : std::nullopt;
    return {output, mask};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    variable_list grads(9);
    if (!grad_outputs[0].defined()) {
      return grads;
    }
    static const auto backward_op =
        c10::Dispatcher::singleton()
            .findSchemaOrThrow("edgeqat::_fake_quant_backward", "")
            .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
                const at::Tensor&, const at::Tensor&, std::optional<int64_t>, at::ScalarType,
                at::ScalarType)>();
    const auto& axis_value = ctx->saved_data["axis"];
    const std::optional<int64_t> axis =
        axis_value.isNone() ? std::nullopt : std::optional<int64_t>(axis_value.toInt());
    // The range sums are computed and dropped: the ranges are observed, not learned.
    const auto dtype = grad_outputs[0].scalar_type();
    grads[0] = std::get<0>(
        backward_op.call(grad_outputs[0], ctx->get_saved_variables()[0], axis, dtype, dtype));
    return grads;
  }
};

void check_state_grad(const at::Tensor& observed_min, const at::Tensor& observed_max) {
  TORCH_CHECK(!(at::GradMode::is_enabled() &&
                (observed_min.requires_grad() || observed_max.requires_grad())),
              kObserveFakeQuantOp,
              ": observed_min and observed_max are observer state and must not require grad");
}

void bump_versions(at::Tensor& observed_min, at::Tensor& observed_max) {
  torch::autograd::increment_version(observed_min);
  torch::autograd::increment_version(observed_max);
}

std::tuple<at::Tensor, at::Tensor> run(at::Tensor& observed_min, at::Tensor& observed_max,
                                       const at::Tensor& x, std::optional<int64_t> axis,
                                       double averaging_constant, bool accumulate, bool symmetric,
                                       int64_t num_bits, bool narrow_range, Clamp clamp,
                                       bool with_mask) {
  check_state_grad(observed_min, observed_max);
  std::tuple<at::Tensor, at::Tensor> result;
  if (at::GradMode::is_enabled() && x.requires_grad()) {
    auto r = ObserveFakeQuantFunction::apply(x, State{&observed_min, &observed_max}, axis,
                                             averaging_constant, accumulate, symmetric, num_bits,
                                             narrow_range, clamp);
    result = {r[0], r[1]};
  } else {
    at::AutoDispatchBelowADInplaceOrView guard;
    if (with_mask) {
      result =
          cachemask_op().call(observed_min, observed_max, x, axis, averaging_constant, accumulate,
                              symmetric, num_bits, narrow_range, clamp.min, clamp.max);
    } else {
      static const auto op = c10::Dispatcher::singleton()
                                 .findSchemaOrThrow("edgeqat::observe_fake_quant_", "")
                                 .typed<Signature>();
      result = {op.call(observed_min, observed_max, x, axis, averaging_constant, accumulate,
                        symmetric, num_bits, narrow_range, clamp.min, clamp.max),
                at::Tensor()};
    }
  }
  bump_versions(observed_min, observed_max);
  return result;
}

at::Tensor observe_fake_quant_autograd(at::Tensor& observed_min, at::Tensor& observed_max,
                                       const at::Tensor& x, std::optional<int64_t> axis,
                                       double averaging_constant, bool accumulate, bool symmetric,
                                       int64_t num_bits, bool narrow_range,
                                       std::optional<double> clamp_min,
                                       std::optional<double> clamp_max) {
  return std::get<0>(run(observed_min, observed_max, x, axis, averaging_constant, accumulate,
                         symmetric, num_bits, narrow_range, Clamp{clamp_min, clamp_max},
                         /*with_mask=*/false));
}

std::tuple<at::Tensor, at::Tensor> observe_fake_quant_cachemask_autograd(
    at::Tensor& observed_min, at::Tensor& observed_max, const at::Tensor& x,
    std::optional<int64_t> axis, double averaging_constant, bool accumulate, bool symmetric,
    int64_t num_bits, bool narrow_range, std::optional<double> clamp_min,
    std::optional<double> clamp_max) {
  return run(observed_min, observed_max, x, axis, averaging_constant, accumulate, symmetric,
             num_bits, narrow_range, Clamp{clamp_min, clamp_max}, /*with_mask=*/true);
}

}  // namespace

TORCH_LIBRARY_IMPL(edgeqat, Autograd, m) {
  m.impl("observe_fake_quant_", observe_fake_quant_autograd);
  m.impl("_observe_fake_quant_cachemask_", observe_fake_quant_cachemask_autograd);
}

}  // namespace edgeqat::ops
