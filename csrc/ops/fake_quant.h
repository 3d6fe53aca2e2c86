// Internal declarations shared by the fake-quant kernels of every backend.
//
// The public ops (schemas in fake_quant.cpp) are
//   fake_quant_with_min_max_vars              per tensor, min/max 0-dim
//   fake_quant_with_min_max_vars_per_channel  min/max 1-D along `axis`
// Autograd (autograd/fake_quant_kernel.cpp) routes both through two internal
// ops, where `axis = None` means per tensor:
//   _fake_quant_cachemask(x, min, max, axis, num_bits, narrow_range) -> (output, mask)
//   _fake_quant_backward(grad, mask, axis, range_dtype) -> (grad_x, grad_min, grad_max)
// The uint8 mask (detail::MaskCode) is all the backward needs, so autograd
// never keeps the input alive.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <tuple>

namespace edgeqat::ops {

// Argument checks that need no tensor values (shapes, dtypes, devices,
// num_bits, axis). Used by every backend, Meta included. Returns the axis
// normalised to [0, x.dim()) when one is given.
std::optional<int64_t> check_fake_quant_args(
    const char* op, const at::Tensor& x, const at::Tensor& min, const at::Tensor& max,
    std::optional<int64_t> axis, int64_t num_bits);

// Checks on the range values: finite, min <= max, max - min finite. Takes host
// copies (double) of min and max, so it works for every device.
void check_range_values(const char* op, const at::Tensor& min_host, const at::Tensor& max_host);

// Checks for the backward op: grad and mask agree, range_dtype is floating.
std::optional<int64_t> check_backward_args(
    const at::Tensor& grad, const at::Tensor& mask, std::optional<int64_t> axis,
    at::ScalarType range_dtype);

// Shape of the per-range gradients: [] per tensor, [x.size(axis)] per channel.
at::Tensor empty_range_grad(const at::Tensor& like, std::optional<int64_t> axis,
                            at::ScalarType range_dtype);

// Compute dtype: double for double inputs, float otherwise (float32, half, bfloat16).
at::ScalarType compute_dtype(at::ScalarType input_dtype);

}  // namespace edgeqat::ops
