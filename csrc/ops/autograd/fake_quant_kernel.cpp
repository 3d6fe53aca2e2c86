// Autograd for the fake-quant ops, in C++ so that a LibTorch program without
// Python gets the same gradients.
//
// Forward with grad: _fake_quant_cachemask returns the output and a uint8
// mask (detail::MaskCode); only the mask is saved, 1 byte per element.
// Backward: _fake_quant_backward, a registered op of its own. Its result is
// linear in the incoming gradient, so its own backward (double backward, used
// by Hessian-based sensitivity methods) is exact and cheap: route each
// grad-of-grad back through the same mask.
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ATen.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include "../fake_quant.h"
#include "../fake_quant_math.h"

namespace edgeqat::ops {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

const c10::TypedOperatorHandle<std::tuple<at::Tensor, at::Tensor>(
    const at::Tensor&, const at::Tensor&, const at::Tensor&, std::optional<int64_t>, int64_t,
    bool)>&
cachemask_op() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("edgeqat::_fake_quant_cachemask", "")
                             .typed<std::tuple<at::Tensor, at::Tensor>(
                                 const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                 std::optional<int64_t>, int64_t, bool)>();
  return op;
}

const c10::TypedOperatorHandle<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
    const at::Tensor&, const at::Tensor&, std::optional<int64_t>, at::ScalarType,
    at::ScalarType)>&
backward_op() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("edgeqat::_fake_quant_backward", "")
                             .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
                                 const at::Tensor&, const at::Tensor&, std::optional<int64_t>,
                                 at::ScalarType, at::ScalarType)>();
  return op;
}

std::optional<int64_t> saved_axis(AutogradContext* ctx) {
  const auto& v = ctx->saved_data["axis"];
  return v.isNone() ? std::nullopt : std::optional<int64_t>(v.toInt());
}

class FakeQuantFunction : public torch::autograd::Function<FakeQuantFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& min,
                               const at::Tensor& max, std::optional<int64_t> axis,
                               int64_t num_bits, bool narrow_range) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [output, mask] = cachemask_op().call(x, min, max, axis, num_bits, narrow_range);
    ctx->save_for_backward({mask});
    ctx->mark_non_differentiable({mask});
    ctx->set_materialize_grads(false);
    ctx->saved_data["axis"] = axis;
    ctx->saved_data["min_dtype"] = static_cast<int64_t>(min.scalar_type());
    ctx->saved_data["max_dtype"] = static_cast<int64_t>(max.scalar_type());
    return {output, mask};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    if (!grad_outputs[0].defined()) {
      return variable_list(6);
    }
    const auto mask = ctx->get_saved_variables()[0];
    auto dtype = [&](const char* key) {
      return static_cast<at::ScalarType>(ctx->saved_data[key].toInt());
    };
    auto [grad_x, grad_min, grad_max] = backward_op().call(
        grad_outputs[0], mask, saved_axis(ctx), dtype("min_dtype"), dtype("max_dtype"));
    return {grad_x, grad_min, grad_max, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

class FakeQuantBackwardFunction : public torch::autograd::Function<FakeQuantBackwardFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& grad,
                               const at::Tensor& mask, std::optional<int64_t> axis,
                               at::ScalarType min_dtype, at::ScalarType max_dtype) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [grad_x, grad_min, grad_max] =
        backward_op().call(grad, mask, axis, min_dtype, max_dtype);
    ctx->save_for_backward({mask});
    // Normalised: the grad-of-grad reshapes along it.
    ctx->saved_data["axis"] =
        axis.has_value() ? std::optional<int64_t>(c10::maybe_wrap_dim(*axis, mask.dim()))
                         : std::nullopt;
    ctx->saved_data["grad_dtype"] = static_cast<int64_t>(grad.scalar_type());
    return {grad_x, grad_min, grad_max};
  }

  // d(grad_x)/d(grad) is the inside mask, d(grad_min)/d(grad) the below mask,
  // d(grad_max)/d(grad) the above mask.
  static variable_list backward(AutogradContext* ctx, variable_list gg) {
    const auto mask = ctx->get_saved_variables()[0];
    const auto axis = saved_axis(ctx);
    const auto dtype = static_cast<at::ScalarType>(ctx->saved_data["grad_dtype"].toInt());
    auto along_axis = [&](const at::Tensor& r) {
      if (!axis.has_value()) {
        return r;
      }
      std::vector<int64_t> shape(mask.dim(), 1);
      shape[*axis] = -1;
      return r.reshape(shape);
    };
    const auto zero = at::zeros({}, mask.options().dtype(dtype));
    at::Tensor result = at::where(mask.eq(detail::kInside), gg[0].to(dtype), zero);
    result = result + at::where(mask.eq(detail::kBelow), along_axis(gg[1]).to(dtype), zero);
    result = result + at::where(mask.eq(detail::kAbove), along_axis(gg[2]).to(dtype), zero);
    return {result, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

bool needs_grad(const at::Tensor& x, const at::Tensor& min, const at::Tensor& max) {
  return at::GradMode::is_enabled() && (x.requires_grad() || min.requires_grad() ||
                                        max.requires_grad());
}

at::Tensor fake_quant_autograd(const at::Tensor& x, const at::Tensor& min, const at::Tensor& max,
                               int64_t num_bits, bool narrow_range) {
  if (!needs_grad(x, min, max)) {
    // Inference: no mask to compute or keep.
    at::AutoDispatchBelowADInplaceOrView guard;
    static const auto op = c10::Dispatcher::singleton()
                               .findSchemaOrThrow("edgeqat::fake_quant_with_min_max_vars", "")
                               .typed<at::Tensor(const at::Tensor&, const at::Tensor&,
                                                 const at::Tensor&, int64_t, bool)>();
    return op.call(x, min, max, num_bits, narrow_range);
  }
  return FakeQuantFunction::apply(x, min, max, std::nullopt, num_bits, narrow_range)[0];
}

at::Tensor fake_quant_per_channel_autograd(const at::Tensor& x, const at::Tensor& min,
                                           const at::Tensor& max, int64_t axis,
                                           int64_t num_bits, bool narrow_range) {
  if (!needs_grad(x, min, max)) {
    at::AutoDispatchBelowADInplaceOrView guard;
    static const auto op =
        c10::Dispatcher::singleton()
            .findSchemaOrThrow("edgeqat::fake_quant_with_min_max_vars_per_channel", "")
            .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, int64_t,
                              int64_t, bool)>();
    return op.call(x, min, max, axis, num_bits, narrow_range);
  }
  return FakeQuantFunction::apply(x, min, max, axis, num_bits, narrow_range)[0];
}

std::tuple<at::Tensor, at::Tensor> fake_quant_cachemask_autograd(
    const at::Tensor& x, const at::Tensor& min, const at::Tensor& max,
    std::optional<int64_t> axis, int64_t num_bits, bool narrow_range) {
  // The building block of the two ops above; called directly, the output
  // differentiates like theirs and the mask is not differentiable.
  if (!needs_grad(x, min, max)) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return cachemask_op().call(x, min, max, axis, num_bits, narrow_range);
  }
  auto r = FakeQuantFunction::apply(x, min, max, axis, num_bits, narrow_range);
  return {r[0], r[1]};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> fake_quant_backward_autograd(
    const at::Tensor& grad, const at::Tensor& mask, std::optional<int64_t> axis,
    at::ScalarType min_dtype, at::ScalarType max_dtype) {
  if (!(at::GradMode::is_enabled() && grad.requires_grad())) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return backward_op().call(grad, mask, axis, min_dtype, max_dtype);
  }
  auto r = FakeQuantBackwardFunction::apply(grad, mask, axis, min_dtype, max_dtype);
  return {r[0], r[1], r[2]};
}

}  // namespace

TORCH_LIBRARY_IMPL(edgeqat, Autograd, m) {
  m.impl("fake_quant_with_min_max_vars", fake_quant_autograd);
  m.impl("fake_quant_with_min_max_vars_per_channel", fake_quant_per_channel_autograd);
  m.impl("_fake_quant_cachemask", fake_quant_cachemask_autograd);
  m.impl("_fake_quant_backward", fake_quant_backward_autograd);
}

}  // namespace edgeqat::ops
