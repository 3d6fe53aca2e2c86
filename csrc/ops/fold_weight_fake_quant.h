// Internal declarations shared by the kernels of the folded-weight fake quant
// (schemas and semantics in fold_weight_fake_quant.cpp):
//   fold_weight_fake_quant_(observed_min, observed_max, weight, factor, observe,
//                           averaging_constant, accumulate, symmetric, num_bits,
//                           narrow_range, unfold) -> output
//   _fold_weight_fake_quant_nudged_(same) -> (output, nudged_min, nudged_max)
//   _fold_weight_fake_quant_backward(grad, weight, factor, nudged_min, nudged_max, output,
//                                    unfold) -> (grad_weight, grad_factor)
// Autograd runs the second and saves the nudged range it quantized with (the
// kernel range of fake_quant_span.h: [0, 0] when degenerate; compute dtype,
// shaped like the state), weight, factor and, to un-fold, the output; the
// third is the backward, which recomputes weight * factor to know where it
// was inside the range (no weight-sized mask is kept).
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <tuple>

namespace edgeqat::ops {

constexpr const char* kFoldWeightFakeQuantOp = "edgeqat::fold_weight_fake_quant_";
constexpr const char* kFoldWeightBackwardOp = "edgeqat::_fold_weight_fake_quant_backward";

// Argument checks that need no tensor values: weight floating with dim >= 1;
// factor 1-D of length weight.size(0), weight's dtype and device;
// averaging_constant in (0, 1]; num_bits in [2, 16]; the state floating, on
// weight's device, both 0-dim (per tensor) or both [weight.size(0)] (per
// output channel). Returns the quantizer axis: 0 per channel, none per tensor.
std::optional<int64_t> check_fold_weight_args(const at::Tensor& observed_min,
                                              const at::Tensor& observed_max,
                                              const at::Tensor& weight, const at::Tensor& factor,
                                              double averaging_constant, int64_t num_bits);

// Checks of the backward op's arguments (shapes, dtypes, devices, output
// given when unfold).
void check_fold_weight_backward_args(const at::Tensor& grad, const at::Tensor& weight,
                                     const at::Tensor& factor, const at::Tensor& nudged_min,
                                     const at::Tensor& nudged_max,
                                     const std::optional<at::Tensor>& output, bool unfold);

// factor reshaped to [C, 1, ..., 1] (weight.dim() dims), to broadcast over weight.
at::Tensor factor_as_channels(const at::Tensor& factor, const at::Tensor& weight);

// The composite (ATen-op) kernels, for devices without a fused kernel, Meta,
// and the cases the fused CPU kernel leaves to them (half / bfloat16, state in
// another dtype, layouts where an output channel is not one contiguous block).
// Forward: exactly the ops the unfused ConvBn2d ran; backward: exactly the ops
// autograd ran through them, sums included (bit for bit with the unfused path).
// with_range: also return the nudged range (else two undefined tensors).
std::tuple<at::Tensor, at::Tensor, at::Tensor> fold_weight_fake_quant_composite_impl(
    at::Tensor& observed_min, at::Tensor& observed_max, const at::Tensor& weight,
    const at::Tensor& factor, bool observe, double averaging_constant, bool accumulate,
    bool symmetric, int64_t num_bits, bool narrow_range, bool unfold, bool with_range);

std::tuple<at::Tensor, at::Tensor> fold_weight_fake_quant_backward_composite(
    const at::Tensor& grad, const at::Tensor& weight, const at::Tensor& factor,
    const at::Tensor& nudged_min, const at::Tensor& nudged_max,
    const std::optional<at::Tensor>& output, bool unfold);

}  // namespace edgeqat::ops
