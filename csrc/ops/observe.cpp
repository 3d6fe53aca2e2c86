// Schema and C++ API of the range observer op:
//
//   observe_min_max_(Tensor(a!) running_min, Tensor(b!) running_max, Tensor x,
//                    int? axis, float averaging_constant=1.0, bool accumulate=False) -> ()
//
// Updates the observed range of x in place (per tensor, or per slice along
// axis), the state of every observer in edgeqat:
//   - running_min > running_max (modules start at +inf / -inf) means "nothing
//     observed yet": the first batch sets the range;
//   - accumulate: running min/max over all batches seen;
//   - otherwise an exponential moving average of the batch min/max,
//     new = old + averaging_constant * (batch - old): 1.0 keeps the last
//     batch (TF's weight quantizers), 0.001 is TF's activation decay 0.999.
// An empty x changes nothing; a batch with NaN or infinite values is an error
// (it would poison the range silently).
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include "edgeqat/ops.h"

namespace edgeqat {

void observe_min_max_(at::Tensor& running_min, at::Tensor& running_max, const at::Tensor& x,
                      std::optional<int64_t> axis, double averaging_constant, bool accumulate) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("edgeqat::observe_min_max_", "")
                             .typed<void(at::Tensor&, at::Tensor&, const at::Tensor&,
                                         std::optional<int64_t>, double, bool)>();
  op.call(running_min, running_max, x, axis, averaging_constant, accumulate);
}

TORCH_LIBRARY_FRAGMENT(edgeqat, m) {
  m.def(
      "observe_min_max_(Tensor(a!) running_min, Tensor(b!) running_max, Tensor x, int? axis, "
      "float averaging_constant=1.0, bool accumulate=False) -> ()",
      {at::Tag::pt2_compliant_tag});
}

}  // namespace edgeqat
