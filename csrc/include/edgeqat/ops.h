// The fake-quant ops as C++ functions. Each call goes through the PyTorch
// dispatcher, so it runs the same kernels (and the same C++ autograd) as
// torch.ops.edgeqat.* in Python.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>

namespace edgeqat {

// TensorFlow's FakeQuantWithMinMaxVars: nudges [min, max] so that 0.0 is on
// the grid {quant_min .. 2^num_bits - 1} (quant_min = 1 if narrow_range),
// clamps x into the nudged range and rounds it to the grid. Gradients: x gets
// the incoming gradient inside the nudged range (both ends included), min the
// sum below it, max the sum above it.
//   x:   floating tensor of any shape and layout
//   min, max: 0-dim floating tensors on x's device, finite, min <= max
//   num_bits in [2, 16]
// Returns a tensor of x's shape, dtype and layout.
at::Tensor fake_quant_with_min_max_vars(const at::Tensor& x, const at::Tensor& min,
                                        const at::Tensor& max, int64_t num_bits = 8,
                                        bool narrow_range = false);

// The same with one range per slice along `axis` (negative counts from the
// end): min and max are 1-D of length x.size(axis). Gradients to min and max
// are summed over every axis except `axis`.
at::Tensor fake_quant_with_min_max_vars_per_channel(const at::Tensor& x, const at::Tensor& min,
                                                    const at::Tensor& max, int64_t axis,
                                                    int64_t num_bits = 8,
                                                    bool narrow_range = false);

// Observer state update, in place: the range of x (per tensor, or per slice
// along `axis`) folded into [running_min, running_max]. State with
// running_min > running_max (start at +inf / -inf) takes the first batch's
// range; then `accumulate` keeps the all-time min/max, otherwise an
// exponential moving average new = old + averaging_constant * (batch - old)
// (1.0: last batch only). Empty x: no change. NaN/inf in x: error.
void observe_min_max_(at::Tensor& running_min, at::Tensor& running_max, const at::Tensor& x,
                      std::optional<int64_t> axis = std::nullopt,
                      double averaging_constant = 1.0, bool accumulate = false);

// One observer step of a fake quantizer, fused: observe_min_max_ on
// [observed_min, observed_max] (same arguments, same state, bit for bit),
// then fake_quant_with_min_max_vars[_per_channel] of x with the range made
// from the updated state: [min(observed_min, 0), max(observed_max, 0)], or
// [-b, b] with b the larger magnitude when `symmetric`. Returns the
// fake-quantized x (x's shape, dtype and layout). Gradient: to x only,
// straight through inside the nudged range; the state must not require grad.
at::Tensor observe_fake_quant_(at::Tensor& observed_min, at::Tensor& observed_max,
                               const at::Tensor& x, std::optional<int64_t> axis = std::nullopt,
                               double averaging_constant = 1.0, bool accumulate = false,
                               bool symmetric = false, int64_t num_bits = 8,
                               bool narrow_range = false);

}  // namespace edgeqat
