// The fake-quant ops composed of ATen ops, for every device without a fused
// kernel (CUDA, MPS, XPU, ...). Registered for CompositeExplicitAutograd, so
// the fused CPU and Meta kernels take precedence on their devices; declared
// here so the tests can run it on CPU against the fused kernel.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <tuple>

namespace edgeqat::ops::composite {

// Nudged ranges as tensors (compute dtype), broadcastable like the min / max they came from.
struct NudgedTensors {
  at::Tensor lo, hi, scale, zero_index;
};

NudgedTensors nudge(const at::Tensor& mn, const at::Tensor& mx, int64_t num_bits,
                    bool narrow_range);

std::tuple<at::Tensor, at::Tensor> fake_quant_cachemask(const at::Tensor& x, const at::Tensor& min,
                                                        const at::Tensor& max,
                                                        std::optional<int64_t> axis,
                                                        int64_t num_bits, bool narrow_range);

std::tuple<at::Tensor, at::Tensor, at::Tensor> fake_quant_backward(const at::Tensor& grad,
                                                                   const at::Tensor& mask,
                                                                   std::optional<int64_t> axis,
                                                                   at::ScalarType min_dtype,
                                                                   at::ScalarType max_dtype);

}  // namespace edgeqat::ops::composite
