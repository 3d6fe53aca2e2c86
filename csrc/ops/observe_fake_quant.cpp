// Schema and C++ API of the fused observer step:
//
//   observe_fake_quant_(Tensor(a!) observed_min, Tensor(b!) observed_max, Tensor x, int? axis,
//                       float averaging_constant=1.0, bool accumulate=False,
//                       bool symmetric=False, int num_bits=8, bool narrow_range=False,
//                       float? clamp_min=None, float? clamp_max=None) -> Tensor
//
// One call does what FakeQuantizer's OBSERVE step in training does with three:
//  1. observe_min_max_(observed_min, observed_max, x', axis, averaging_constant, accumulate):
//     the state update, bit for bit (see observe.cpp), where x' = clamp(x, clamp_min,
//     clamp_max), or x itself when neither bound is given. x' is never materialised: its batch
//     range is x's batch range clamped (min and max commute with clamping). This is how a
//     ReLU / ReLU6 in front of the quantizer is fused into it: the observer sees the
//     activation's output, and, once the range lies inside [clamp_min, clamp_max] (ActQuant
//     checks it), fake-quantizing x itself clamps exactly as the activation would;
//  2. the quantization range from the updated state: widened to contain 0,
//     [-b, b] with b = max(|lo|, |hi|) when symmetric;
//  3. fake_quant_with_min_max_vars[_per_channel](x, lo, hi, ...) with it, bit for bit.
// Gradient: x gets the straight-through estimate (the incoming gradient where
// x lies inside the nudged range); the observed state gets none, it is not a
// parameter. Step 3 always quantizes x, not x'. The CPU kernel reads x once for the batch range and
// once more to quantize; the composite kernel (other devices, Meta) runs the three steps.
#include "observe_fake_quant.h"

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <cmath>

#include "edgeqat/ops.h"

namespace edgeqat {
namespace ops {
namespace {

void check_state(const char* name, const at::Tensor& state, const at::Tensor& x,
                 std::optional<int64_t> axis) {
  const char* op = kObserveFakeQuantOp;
  TORCH_CHECK(at::isFloatingType(state.scalar_type()), op, ": ", name,
              " must be a floating-point tensor, got dtype ", state.scalar_type());
  TORCH_CHECK(state.device() == x.device(), op, ": ", name, " is on ", state.device(),
              " but x is on ", x.device());
  if (axis.has_value()) {
    TORCH_CHECK(state.dim() == 1 && state.sym_size(0) == x.sym_size(*axis), op, ": ", name,
                " must be 1-D of length x.size(", *axis, ") = ", x.sym_size(*axis), ", got shape ",
                state.sym_sizes());
  } else {
    TORCH_CHECK(state.dim() == 0, op, ": ", name, " must be a 0-dim tensor, got shape ",
                state.sym_sizes());
  }
}

}  // namespace

std::optional<int64_t> check_observe_fake_quant_args(
    const at::Tensor& observed_min, const at::Tensor& observed_max, const at::Tensor& x,
    std::optional<int64_t> axis_in, double averaging_constant, int64_t num_bits,
    std::optional<double> clamp_min, std::optional<double> clamp_max) {
  const char* op = kObserveFakeQuantOp;
  for (const auto& [name, bound] : {std::pair{"clamp_min", clamp_min}, {"clamp_max", clamp_max}}) {
    TORCH_CHECK(!bound.has_value() || std::isfinite(*bound), op, ": ", name,
                " must be finite or None, got ", *bound);
  }
  TORCH_CHECK(!(clamp_min.has_value() && clamp_max.has_value()) || *clamp_min <= *clamp_max, op,
              ": clamp_min must not exceed clamp_max, got clamp_min=", *clamp_min,
              " and clamp_max=", *clamp_max);
  TORCH_CHECK(at::isFloatingType(x.scalar_type()), op,
              ": x must be a floating-point tensor, got dtype ", x.scalar_type());
  TORCH_CHECK(averaging_constant > 0.0 && averaging_constant <= 1.0, op,
              ": averaging_constant must be in (0, 1], got ", averaging_constant);
  TORCH_CHECK(num_bits >= 2 && num_bits <= 16, op, ": num_bits must be in [2, 16], got ", num_bits);
  std::optional<int64_t> axis;
  if (axis_in.has_value()) {
    const int64_t ndim = x.dim();
    TORCH_CHECK(ndim > 0 && *axis_in >= -ndim && *axis_in < ndim, op, ": axis ", *axis_in,
                " is out of range for x with ", ndim, " dimension(s)");
    axis = *axis_in < 0 ? *axis_in + ndim : *axis_in;
  }
  check_state("observed_min", observed_min, x, axis);
  check_state("observed_max", observed_max, x, axis);
  return axis;
}

std::pair<at::Tensor, at::Tensor> quant_range_from_observed(const at::Tensor& observed_min,
                                                            const at::Tensor& observed_max,
                                                            bool symmetric) {
  // The same ATen ops, in the same order, as FakeQuantizer.observed_range().
  at::Tensor lo = observed_min.detach().clamp_max(0.0);
  at::Tensor hi = observed_max.detach().clamp_min(0.0);
  if (symmetric) {
    at::Tensor bound = at::maximum(lo.neg(), hi);
    return {bound.neg(), bound};
  }
  return {lo, hi};
}

std::tuple<at::Tensor, at::Tensor> fake_quant_with_range(const at::Tensor& x, const at::Tensor& lo,
                                                         const at::Tensor& hi,
                                                         std::optional<int64_t> axis,
                                                         int64_t num_bits, bool narrow_range,
                                                         bool with_mask) {
  if (with_mask) {
    static const auto cachemask = c10::Dispatcher::singleton()
                                      .findSchemaOrThrow("edgeqat::_fake_quant_cachemask", "")
                                      .typed<std::tuple<at::Tensor, at::Tensor>(
                                          const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                          std::optional<int64_t>, int64_t, bool)>();
    return cachemask.call(x, lo, hi, axis, num_bits, narrow_range);
  }
  if (axis.has_value()) {
    return {fake_quant_with_min_max_vars_per_channel(x, lo, hi, *axis, num_bits, narrow_range),
            at::Tensor()};
  }
  return {fake_quant_with_min_max_vars(x, lo, hi, num_bits, narrow_range), at::Tensor()};
}

}  // namespace ops

at::Tensor observe_fake_quant_(at::Tensor& observed_min, at::Tensor& observed_max,
                               const at::Tensor& x, std::optional<int64_t> axis,
                               double averaging_constant, bool accumulate, bool symmetric,
                               int64_t num_bits, bool narrow_range, std::optional<double> clamp_min,
                               std::optional<double> clamp_max) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("edgeqat::observe_fake_quant_", "")
                             .typed<decltype(observe_fake_quant_)>();
  return op.call(observed_min, observed_max, x, axis, averaging_constant, accumulate, symmetric,
                 num_bits, narrow_range, clamp_min, clamp_max);
}

TORCH_LIBRARY_FRAGMENT(edgeqat, m) {
  const std::vector<at::Tag> tags{at::Tag::pt2_compliant_tag};
  m.def(
      "observe_fake_quant_(Tensor(a!) observed_min, Tensor(b!) observed_max, Tensor x, "
      "int? axis, float averaging_constant=1.0, bool accumulate=False, bool symmetric=False, "
      "int num_bits=8, bool narrow_range=False, float? clamp_min=None, float? clamp_max=None) "
      "-> Tensor",
      tags);
  m.def(
      "_observe_fake_quant_cachemask_(Tensor(a!) observed_min, Tensor(b!) observed_max, "
      "Tensor x, int? axis, float averaging_constant, bool accumulate, bool symmetric, "
      "int num_bits, bool narrow_range, float? clamp_min=None, float? clamp_max=None) "
      "-> (Tensor output, Tensor mask)",
      tags);
}

}  // namespace edgeqat
