// observe_fake_quant_ composed of the three ops it fuses (see
// ../observe_fake_quant.cpp), for every device without a fused kernel, Meta
// included: observe_min_max_ (of clamp(x, clamp_min, clamp_max) when a bound
// is given, materialised here), the range derivation in ATen ops, then the
// fake-quant op of x. Bit for bit what FakeQuantizer's unfused OBSERVE step
// does.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include "../observe_fake_quant.h"
#include "edgeqat/ops.h"

namespace edgeqat::ops {
namespace {

std::optional<at::Scalar> optional_scalar(std::optional<double> v) {
  return v.has_value() ? std::optional<at::Scalar>(*v) : std::nullopt;
}

std::tuple<at::Tensor, at::Tensor> observe_fake_quant_composite_impl(
    at::Tensor& observed_min, at::Tensor& observed_max, const at::Tensor& x,
    std::optional<int64_t> axis_in, double averaging_constant, bool accumulate, bool symmetric,
    int64_t num_bits, bool narrow_range, std::optional<double> clamp_min,
    std::optional<double> clamp_max, bool with_mask) {
  const auto axis = check_observe_fake_quant_args(
      observed_min, observed_max, x, axis_in, averaging_constant, num_bits, clamp_min, clamp_max);
  const bool clamped = clamp_min.has_value() || clamp_max.has_value();
  const at::Tensor observed =
      clamped ? at::clamp(x.detach(), optional_scalar(clamp_min), optional_scalar(clamp_max)) : x;
  observe_min_max_(observed_min, observed_max, observed, axis, averaging_constant, accumulate);
  auto [lo, hi] = quant_range_from_observed(observed_min, observed_max, symmetric);
  return fake_quant_with_range(x, lo, hi, axis, num_bits, narrow_range, with_mask);
}

at::Tensor observe_fake_quant_composite(at::Tensor& observed_min, at::Tensor& observed_max,
                                        const at::Tensor& x, std::optional<int64_t> axis,
                                        double averaging_constant, bool accumulate, bool symmetric,
                                        int64_t num_bits, bool narrow_range,
                                        std::optional<double> clamp_min,
                                        std::optional<double> clamp_max) {
  return std::get<0>(observe_fake_quant_composite_impl(
      observed_min, observed_max, x, axis, averaging_constant, accumulate, symmetric, num_bits,
      narrow_range, clamp_min, clamp_max, false));
}

std::tuple<at::Tensor, at::Tensor> observe_fake_quant_cachemask_composite(
    at::Tensor& observed_min, at::Tensor& observed_max, const at::Tensor& x,
    std::optional<int64_t> axis, double averaging_constant, bool accumulate, bool symmetric,
    int64_t num_bits, bool narrow_range, std::optional<double> clamp_min,
    std::optional<double> clamp_max) {
  return observe_fake_quant_composite_impl(observed_min, observed_max, x, axis, averaging_constant,
                                           accumulate, symmetric, num_bits, narrow_range, clamp_min,
                                           clamp_max, true);
}

}  // namespace

TORCH_LIBRARY_IMPL(edgeqat, CompositeExplicitAutograd, m) {
  m.impl("observe_fake_quant_", observe_fake_quant_composite);
  m.impl("_observe_fake_quant_cachemask_", observe_fake_quant_cachemask_composite);
}

}  // namespace edgeqat::ops
