// The histogram observer ops under autograd: neither is differentiable.
// observe_histogram_ runs below autograd on the (detached) input and bumps the
// version of the three state tensors it wrote; its floating state must not
// require grad. histogram_range returns fresh tensors that do not require grad.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/csrc/autograd/VariableTypeUtils.h>
#include <torch/library.h>

#include "../histogram.h"

namespace edgeqat::ops {
namespace {

void observe_histogram_autograd(at::Tensor& histogram, at::Tensor& hist_min,
                                at::Tensor& hist_max, const at::Tensor& x) {
  TORCH_CHECK(!(at::GradMode::is_enabled() && (hist_min.requires_grad() ||
                                                hist_max.requires_grad())),
              kObserveHistogramOp,
              ": hist_min and hist_max are observer state and must not require grad");
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("edgeqat::observe_histogram_", "")
                             .typed<void(at::Tensor&, at::Tensor&, at::Tensor&,
                                         const at::Tensor&)>();
  {
    at::AutoDispatchBelowADInplaceOrView guard;
    op.call(histogram, hist_min, hist_max, x);
  }
  torch::autograd::increment_version(histogram);
  torch::autograd::increment_version(hist_min);
  torch::autograd::increment_version(hist_max);
}

std::tuple<at::Tensor, at::Tensor> histogram_range_autograd(
    const at::Tensor& histogram, const at::Tensor& hist_min, const at::Tensor& hist_max,
    c10::string_view method, double percentile, int64_t num_bits, bool narrow_range,
    bool symmetric) {
  static const auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("edgeqat::histogram_range", "")
          .typed<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                    const at::Tensor&, c10::string_view, double,
                                                    int64_t, bool, bool)>();
  at::AutoDispatchBelowADInplaceOrView guard;
  return op.call(histogram, hist_min, hist_max, method, percentile, num_bits, narrow_range,
                 symmetric);
}

}  // namespace

TORCH_LIBRARY_IMPL(edgeqat, Autograd, m) {
  m.impl("observe_histogram_", observe_histogram_autograd);
  m.impl("histogram_range", histogram_range_autograd);
}

}  // namespace edgeqat::ops
