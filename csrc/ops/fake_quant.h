// Internal declarations shared by the fake-quant kernels of every backend.
//
// The public ops (schemas in fake_quant.cpp) are
//   fake_quant_with_min_max_vars              per tensor, min/max 0-dim
//   fake_quant_with_min_max_vars_per_channel  min/max 1-D along `axis`
// Autograd (autograd/fake_quant_kernel.cpp) routes both through two internal
// ops, where `axis = None` means per tensor:
//   _fake_quant_cachemask(x, min, max, axis, num_bits, narrow_range) -> (output, mask)
//   _fake_quant_backward(grad, mask, axis, min_dtype, max_dtype) -> (grad_x, grad_min, grad_max)
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

// The name users know the op by: the internal ops report errors under the
// public op they implement.
const char* public_op_name(std::optional<int64_t> axis);

// Host copies of min and max (flattened, double), rounded through the compute
// dtype first, after checking them as the kernels will use them: finite,
// min <= max, and max - min finite in the compute dtype. Works for tensors
// on any device (a copy to the host).
std::pair<at::Tensor, at::Tensor> checked_host_ranges(const char* op, const at::Tensor& min,
                                                      const at::Tensor& max,
                                                      at::ScalarType compute);

// Checks for the backward op: grad and mask agree, the range dtypes are
// floating. Returns the axis normalised to [0, mask.dim()).
std::optional<int64_t> check_backward_args(const at::Tensor& grad, const at::Tensor& mask,
                                           std::optional<int64_t> axis,
                                           at::ScalarType min_dtype, at::ScalarType max_dtype);

// Shape of the per-range gradients: [] per tensor, [x.size(axis)] per channel.
at::Tensor empty_range_grad(const at::Tensor& like, std::optional<int64_t> axis,
                            at::ScalarType dtype);

// A dense tensor with the same values: `t` itself if it is non-overlapping and
// dense, else a copy laid out as at::empty_like(t) (which the Meta kernels
// also use, so output strides agree across backends).
at::Tensor dense(const at::Tensor& t);

// Compute dtype: double for double inputs, float otherwise (float32, half, bfloat16).
at::ScalarType compute_dtype(at::ScalarType input_dtype);

}  // namespace edgeqat::ops
