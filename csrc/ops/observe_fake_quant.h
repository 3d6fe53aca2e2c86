// Internal declarations shared by the kernels of the fused observer step
// (schemas in observe_fake_quant.cpp):
//   observe_fake_quant_(observed_min, observed_max, x, axis, averaging_constant, accumulate,
//                       symmetric, num_bits, narrow_range, clamp_min, clamp_max) -> output
//   _observe_fake_quant_cachemask_(same) -> (output, mask)
// The second is what autograd runs: the mask (detail::MaskCode) is all the
// backward needs, through _fake_quant_backward.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <tuple>
#include <utility>

namespace edgeqat::ops {

constexpr const char* kObserveFakeQuantOp = "edgeqat::observe_fake_quant_";

// Argument checks that need no tensor values: x floating, averaging_constant
// in (0, 1], num_bits in [2, 16], axis in range, the state floating, on x's
// device, 0-dim per tensor or [x.size(axis)] per channel, the clamp bounds
// finite and ordered. Returns the axis normalised to [0, x.dim()).
std::optional<int64_t> check_observe_fake_quant_args(
    const at::Tensor& observed_min, const at::Tensor& observed_max, const at::Tensor& x,
    std::optional<int64_t> axis, double averaging_constant, int64_t num_bits,
    std::optional<double> clamp_min, std::optional<double> clamp_max);

// The quantization range made from the observed state, as FakeQuantizer's
// observed_range(): [min(observed_min, 0), max(observed_max, 0)], and
// [-b, b] with b = max(-lo, hi) when symmetric. ATen ops, any device.
std::pair<at::Tensor, at::Tensor> quant_range_from_observed(const at::Tensor& observed_min,
                                                            const at::Tensor& observed_max,
                                                            bool symmetric);

// Fake quant of x with the range [lo, hi] (per tensor, or per channel along
// axis): (output, mask) through _fake_quant_cachemask when with_mask (what
// autograd needs), else (output, undefined) through the public op.
std::tuple<at::Tensor, at::Tensor> fake_quant_with_range(const at::Tensor& x, const at::Tensor& lo,
                                                         const at::Tensor& hi,
                                                         std::optional<int64_t> axis,
                                                         int64_t num_bits, bool narrow_range,
                                                         bool with_mask);

}  // namespace edgeqat::ops
