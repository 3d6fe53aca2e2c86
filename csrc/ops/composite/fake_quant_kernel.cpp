// The fake-quant ops composed of ATen ops; see fake_quant_composite.h. Same
// formulas, same order of float operations as the fused CPU kernel
// (fake_quant_math.h), so on CPU the two agree bit for bit.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "../fake_quant.h"
#include "../fake_quant_math.h"
#include "fake_quant_composite.h"

namespace edgeqat::ops::composite {

// TF's nudging as ATen ops on min / max already in the compute dtype (any
// broadcastable shape): the kernel range [lo, hi] ([0, 0] when degenerate), the
// scale (1 when degenerate) and the zero point's index above qmin.
NudgedTensors nudge(const at::Tensor& mn, const at::Tensor& mx, int64_t num_bits,
                    bool narrow_range) {
  const auto dtype = mn.scalar_type();
  const double qmin = static_cast<double>(detail::quant_min(narrow_range));
  const double qmax = static_cast<double>(detail::quant_max(num_bits));
  // Divide by a device tensor, not a host number: CUDA turns division by a
  // host scalar into multiplication by its reciprocal, which differs from
  // TensorFlow's division in the last bit for most widths.
  const at::Tensor scale = (mx - mn) / at::full({}, qmax - qmin, mx.options());
  const at::Tensor degenerate = scale.le(0);
  const at::Tensor safe_scale = at::where(degenerate, at::ones_like(scale), scale);
  const at::Tensor zp_from_min = qmin - mn / safe_scale;
  // std::round (ties away from zero) for values >= 0; negative values are
  // clamped up to qmin >= 0 anyway.
  const at::Tensor fl = at::floor(zp_from_min);
  const at::Tensor zp = (fl + (zp_from_min - fl).ge(0.5).to(dtype)).clamp(qmin, qmax);
  const at::Tensor zero = at::zeros_like(scale);
  return {at::where(degenerate, zero, (qmin - zp) * scale),
          at::where(degenerate, zero, (qmax - zp) * scale), safe_scale,
          at::where(degenerate, zero, zp - qmin)};
}

namespace {

NudgedTensors nudge_tensors(const char* op, const at::Tensor& x, const at::Tensor& min,
                            const at::Tensor& max, std::optional<int64_t> axis, int64_t num_bits,
                            bool narrow_range) {
  const auto dtype = compute_dtype(x.scalar_type());
  // The value checks need the numbers on the host: one sync per call, until
  // devices get fused kernels.
  checked_host_ranges(op, min, max, dtype);
  at::Tensor mn = min.to(dtype);
  at::Tensor mx = max.to(dtype);
  if (axis.has_value()) {
    std::vector<int64_t> shape(x.dim(), 1);
    shape[*axis] = -1;
    mn = mn.reshape(shape);
    mx = mx.reshape(shape);
  }
  return nudge(mn, mx, num_bits, narrow_range);
}

std::vector<int64_t> reduce_dims(int64_t ndim, std::optional<int64_t> axis) {
  std::vector<int64_t> dims;
  for (int64_t d = 0; d < ndim; ++d) {
    if (!axis.has_value() || d != *axis) {
      dims.push_back(d);
    }
  }
  return dims;
}

at::Tensor fake_quant_composite(const at::Tensor& x, const at::Tensor& min, const at::Tensor& max,
                                int64_t num_bits, bool narrow_range) {
  return std::get<0>(fake_quant_cachemask(x, min, max, std::nullopt, num_bits, narrow_range));
}

at::Tensor fake_quant_per_channel_composite(const at::Tensor& x, const at::Tensor& min,
                                            const at::Tensor& max, int64_t axis, int64_t num_bits,
                                            bool narrow_range) {
  return std::get<0>(fake_quant_cachemask(x, min, max, axis, num_bits, narrow_range));
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> fake_quant_cachemask(const at::Tensor& x, const at::Tensor& min,
                                                        const at::Tensor& max,
                                                        std::optional<int64_t> axis_in,
                                                        int64_t num_bits, bool narrow_range) {
  const char* op = public_op_name(axis_in);
  const auto axis = check_fake_quant_args(op, x, min, max, axis_in, num_bits);
  const auto r = nudge_tensors(op, x, min, max, axis, num_bits, narrow_range);
  const at::Tensor xc = x.to(compute_dtype(x.scalar_type()));
  const at::Tensor clamped = at::clamp(xc, r.lo, r.hi);
  const at::Tensor q = at::floor((clamped - r.lo) / r.scale + 0.5);
  const at::Tensor y = ((q - r.zero_index) * r.scale).to(x.scalar_type());
  const at::Tensor mask = xc.lt(r.lo).to(at::kByte) * detail::kBelow +
                          xc.gt(r.hi).to(at::kByte) * detail::kAbove +
                          at::isnan(xc).to(at::kByte) * detail::kNaN;
  return {y, mask.to(at::kByte)};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> fake_quant_backward(const at::Tensor& grad,
                                                                   const at::Tensor& mask,
                                                                   std::optional<int64_t> axis_in,
                                                                   at::ScalarType min_dtype,
                                                                   at::ScalarType max_dtype) {
  const auto axis = check_backward_args(grad, mask, axis_in, min_dtype, max_dtype);
  const at::Tensor zero = at::zeros({}, grad.options());
  const at::Tensor grad_x = at::where(mask.eq(detail::kInside), grad, zero);
  const auto dims = reduce_dims(mask.dim(), axis);
  auto range_sum = [&](detail::MaskCode code, at::ScalarType dtype) {
    const at::Tensor part = at::where(mask.eq(code), grad, zero).to(at::kDouble);
    return (dims.empty() ? part : part.sum(dims)).to(dtype);
  };
  return {grad_x, range_sum(detail::kBelow, min_dtype), range_sum(detail::kAbove, max_dtype)};
}

TORCH_LIBRARY_IMPL(edgeqat, CompositeExplicitAutograd, m) {
  m.impl("fake_quant_with_min_max_vars", fake_quant_composite);
  m.impl("fake_quant_with_min_max_vars_per_channel", fake_quant_per_channel_composite);
  m.impl("_fake_quant_cachemask", fake_quant_cachemask);
  m.impl("_fake_quant_backward", fake_quant_backward);
}

}  // namespace edgeqat::ops::composite
