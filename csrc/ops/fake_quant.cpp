// Schemas of the fake-quant ops, their argument checks and the C++ API.
#include "fake_quant.h"

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/util/irange.h>
#include <torch/library.h>

#include <cmath>
#include <iomanip>
#include <sstream>
#include <string>

#include "edgeqat/ops.h"

namespace edgeqat {
namespace ops {

std::optional<int64_t> check_fake_quant_args(
    const char* op, const at::Tensor& x, const at::Tensor& min, const at::Tensor& max,
    std::optional<int64_t> axis, int64_t num_bits) {
  TORCH_CHECK(num_bits >= 2 && num_bits <= 16, op, ": num_bits must be in [2, 16], got ",
              num_bits);
  TORCH_CHECK(at::isFloatingType(x.scalar_type()), op,
              ": x must be a floating-point tensor (float32, float64, float16 or bfloat16), "
              "got dtype ",
              x.scalar_type());
  for (const auto& [name, range] : {std::pair<const char*, const at::Tensor&>{"min", min},
                                    std::pair<const char*, const at::Tensor&>{"max", max}}) {
    TORCH_CHECK(at::isFloatingType(range.scalar_type()), op, ": ", name,
                " must be a floating-point tensor, got dtype ", range.scalar_type());
    TORCH_CHECK(range.device() == x.device(), op, ": ", name, " is on ", range.device(),
                " but x is on ", x.device(), "; all tensors must be on the same device");
  }
  if (!axis.has_value()) {
    TORCH_CHECK(min.dim() == 0, op, ": min must be a 0-dim tensor, got shape ", min.sym_sizes());
    TORCH_CHECK(max.dim() == 0, op, ": max must be a 0-dim tensor, got shape ", max.sym_sizes());
    return std::nullopt;
  }
  const int64_t ndim = x.dim();
  TORCH_CHECK(ndim > 0 && *axis >= -ndim && *axis < ndim, op, ": axis ", *axis,
              " is out of range for x with ", ndim, " dimension(s) (shape ", x.sym_sizes(), ")");
  const int64_t dim = *axis < 0 ? *axis + ndim : *axis;
  const c10::SymInt& channels = x.sym_size(dim);
  TORCH_CHECK(min.dim() == 1 && min.sym_size(0) == channels, op,
              ": min must be 1-D of length x.size(", dim, ") = ", channels, ", got shape ",
              min.sym_sizes());
  TORCH_CHECK(max.dim() == 1 && max.sym_size(0) == channels, op,
              ": max must be 1-D of length x.size(", dim, ") = ", channels, ", got shape ",
              max.sym_sizes());
  return dim;
}

const char* public_op_name(std::optional<int64_t> axis) {
  return axis.has_value() ? "edgeqat::fake_quant_with_min_max_vars_per_channel"
                          : "edgeqat::fake_quant_with_min_max_vars";
}

namespace {
// Every digit a value of the compute dtype needs, so that two values that
// differ are printed differently.
std::string show(double v, at::ScalarType compute) {
  std::ostringstream out;
  out << std::setprecision(compute == at::kDouble ? 17 : 9) << v;
  return out.str();
}
}  // namespace

std::pair<at::Tensor, at::Tensor> checked_host_ranges(const char* op, const at::Tensor& min,
                                                      const at::Tensor& max,
                                                      at::ScalarType compute) {
  auto host = [&](const at::Tensor& t) {
    return t.detach().to(at::kCPU).to(compute).to(at::kDouble).reshape({-1}).contiguous();
  };
  at::Tensor mins = host(min), maxs = host(max);
  const double* lo = mins.const_data_ptr<double>();
  const double* hi = maxs.const_data_ptr<double>();
  const bool per_channel = min.dim() > 0;
  for (const auto c : c10::irange(mins.numel())) {
    const std::string at_c = per_channel ? "[" + std::to_string(c) + "]" : std::string();
    TORCH_CHECK(std::isfinite(lo[c]), op, ": min", at_c, " must be finite in ", compute,
                ", got ", show(lo[c], compute));
    TORCH_CHECK(std::isfinite(hi[c]), op, ": max", at_c, " must be finite in ", compute,
                ", got ", show(hi[c], compute));
    TORCH_CHECK(lo[c] <= hi[c], op, ": min", at_c, " = ", show(lo[c], compute),
                " is greater than max", at_c, " = ", show(hi[c], compute));
    // The width as the kernels compute it.
    const double width = compute == at::kDouble
                             ? hi[c] - lo[c]
                             : static_cast<double>(static_cast<float>(hi[c]) -
                                                   static_cast<float>(lo[c]));
    TORCH_CHECK(std::isfinite(width), op, ": the range [", show(lo[c], compute), ", ",
                show(hi[c], compute), "]", at_c, " is too wide: max - min overflows ", compute);
  }
  return {mins, maxs};
}

at::Tensor dense(const at::Tensor& t) {
  return t.is_non_overlapping_and_dense() ? t : at::empty_like(t).copy_(t);
}

std::optional<int64_t> check_backward_args(const at::Tensor& grad, const at::Tensor& mask,
                                           std::optional<int64_t> axis,
                                           at::ScalarType min_dtype, at::ScalarType max_dtype) {
  constexpr const char* op = "edgeqat::_fake_quant_backward";
  TORCH_CHECK(at::isFloatingType(grad.scalar_type()), op,
              ": grad must be floating point, got dtype ", grad.scalar_type());
  TORCH_CHECK(mask.scalar_type() == at::kByte, op, ": mask must be uint8, got dtype ",
              mask.scalar_type());
  TORCH_CHECK(grad.sym_sizes() == mask.sym_sizes(), op, ": grad has shape ", grad.sym_sizes(),
              " but mask has shape ", mask.sym_sizes());
  TORCH_CHECK(grad.device() == mask.device(), op, ": grad is on ", grad.device(),
              " but mask is on ", mask.device());
  TORCH_CHECK(at::isFloatingType(min_dtype), op, ": min_dtype must be a floating dtype, got ",
              min_dtype);
  TORCH_CHECK(at::isFloatingType(max_dtype), op, ": max_dtype must be a floating dtype, got ",
              max_dtype);
  if (!axis.has_value()) {
    return std::nullopt;
  }
  const int64_t ndim = mask.dim();
  TORCH_CHECK(ndim > 0 && *axis >= -ndim && *axis < ndim, op, ": axis ", *axis,
              " is out of range for a mask with ", ndim, " dimension(s)");
  return *axis < 0 ? *axis + ndim : *axis;
}

at::Tensor empty_range_grad(const at::Tensor& like, std::optional<int64_t> axis,
                            at::ScalarType dtype) {
  const auto options = like.options().dtype(dtype);
  if (!axis.has_value()) {
    return at::empty({}, options);
  }
  return at::empty_symint({like.sym_size(*axis)}, options);
}

at::ScalarType compute_dtype(at::ScalarType input_dtype) {
  return input_dtype == at::kDouble ? at::kDouble : at::kFloat;
}

}  // namespace ops

// The C++ API: plain functions that go through the dispatcher, so LibTorch
// programs get the same kernels, autograd included, as Python.
at::Tensor fake_quant_with_min_max_vars(const at::Tensor& x, const at::Tensor& min,
                                        const at::Tensor& max, int64_t num_bits,
                                        bool narrow_range) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("edgeqat::fake_quant_with_min_max_vars", "")
                             .typed<decltype(fake_quant_with_min_max_vars)>();
  return op.call(x, min, max, num_bits, narrow_range);
}

at::Tensor fake_quant_with_min_max_vars_per_channel(const at::Tensor& x, const at::Tensor& min,
                                                    const at::Tensor& max, int64_t axis,
                                                    int64_t num_bits, bool narrow_range) {
  static const auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("edgeqat::fake_quant_with_min_max_vars_per_channel", "")
          .typed<decltype(fake_quant_with_min_max_vars_per_channel)>();
  return op.call(x, min, max, axis, num_bits, narrow_range);
}

TORCH_LIBRARY(edgeqat, m) {
  const std::vector<at::Tag> tags{at::Tag::pt2_compliant_tag};
  m.def(
      "fake_quant_with_min_max_vars(Tensor x, Tensor min, Tensor max, int num_bits=8, "
      "bool narrow_range=False) -> Tensor",
      tags);
  m.def(
      "fake_quant_with_min_max_vars_per_channel(Tensor x, Tensor min, Tensor max, int axis, "
      "int num_bits=8, bool narrow_range=False) -> Tensor",
      tags);
  m.def(
      "_fake_quant_cachemask(Tensor x, Tensor min, Tensor max, int? axis, int num_bits, "
      "bool narrow_range) -> (Tensor output, Tensor mask)",
      tags);
  m.def(
      "_fake_quant_backward(Tensor grad, Tensor mask, int? axis, ScalarType min_dtype, "
      "ScalarType max_dtype) -> "
      "(Tensor grad_x, Tensor grad_min, Tensor grad_max)",
      tags);
}

}  // namespace edgeqat
