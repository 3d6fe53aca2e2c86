// Meta kernels: shapes, dtypes and strides of every fake-quant op without
// touching data, for FakeTensor, torch.compile and torch.export. Output
// strides are empty_like's, as in the CPU kernel (see ops::dense).
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include "../fake_quant.h"

namespace edgeqat::ops {
namespace {

at::Tensor fake_quant_meta(const at::Tensor& x, const at::Tensor& min, const at::Tensor& max,
                           int64_t num_bits, bool /*narrow_range*/) {
  check_fake_quant_args("edgeqat::fake_quant_with_min_max_vars", x, min, max, std::nullopt,
                        num_bits);
  return at::empty_like(x);
}

at::Tensor fake_quant_per_channel_meta(const at::Tensor& x, const at::Tensor& min,
                                       const at::Tensor& max, int64_t axis, int64_t num_bits,
                                       bool /*narrow_range*/) {
  check_fake_quant_args("edgeqat::fake_quant_with_min_max_vars_per_channel", x, min, max, axis,
                        num_bits);
  return at::empty_like(x);
}

std::tuple<at::Tensor, at::Tensor> fake_quant_cachemask_meta(
    const at::Tensor& x, const at::Tensor& min, const at::Tensor& max,
    std::optional<int64_t> axis, int64_t num_bits, bool /*narrow_range*/) {
  check_fake_quant_args(public_op_name(axis), x, min, max, axis, num_bits);
  return {at::empty_like(x), at::empty_like(x, x.options().dtype(at::kByte))};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> fake_quant_backward_meta(
    const at::Tensor& grad, const at::Tensor& mask, std::optional<int64_t> axis_in,
    at::ScalarType min_dtype, at::ScalarType max_dtype) {
  const auto axis = check_backward_args(grad, mask, axis_in, min_dtype, max_dtype);
  return {at::empty_like(mask, grad.options()), empty_range_grad(mask, axis, min_dtype),
          empty_range_grad(mask, axis, max_dtype)};
}

}  // namespace

TORCH_LIBRARY_IMPL(edgeqat, Meta, m) {
  m.impl("fake_quant_with_min_max_vars", fake_quant_meta);
  m.impl("fake_quant_with_min_max_vars_per_channel", fake_quant_per_channel_meta);
  m.impl("_fake_quant_cachemask", fake_quant_cachemask_meta);
  m.impl("_fake_quant_backward", fake_quant_backward_meta);
}

}  // namespace edgeqat::ops
