// observe_min_max_ under autograd: observation is not differentiable. The
// op runs below autograd on the detached input and bumps the version of the
// two state tensors it wrote, as any in-place op does.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/csrc/autograd/VariableTypeUtils.h>
#include <torch/library.h>

namespace edgeqat::ops {
namespace {

void observe_min_max_autograd(at::Tensor& running_min, at::Tensor& running_max,
                              const at::Tensor& x, std::optional<int64_t> axis,
                              double averaging_constant, bool accumulate) {
  TORCH_CHECK(!(at::GradMode::is_enabled() &&
                (running_min.requires_grad() || running_max.requires_grad())),
              "edgeqat::observe_min_max_: running_min and running_max are observer state and "
              "must not require grad (learned ranges are initialised under torch.no_grad())");
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("edgeqat::observe_min_max_", "")
                             .typed<void(at::Tensor&, at::Tensor&, const at::Tensor&,
                                         std::optional<int64_t>, double, bool)>();
  {
    at::AutoDispatchBelowADInplaceOrView guard;
    op.call(running_min, running_max, x, axis, averaging_constant, accumulate);
  }
  torch::autograd::increment_version(running_min);
  torch::autograd::increment_version(running_max);
}

}  // namespace

TORCH_LIBRARY_IMPL(edgeqat, Autograd, m) {
  m.impl("observe_min_max_", observe_min_max_autograd);
}

}  // namespace edgeqat::ops
