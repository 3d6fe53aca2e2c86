// fold_weight_fake_quant_ composed of the ops it fuses (see ../fold_weight_fake_quant.cpp), for
// every device without a fused kernel, Meta included, and for the cases the fused CPU kernel
// leaves to it. The forward runs the ops the unfused ConvBn2d ran (W * f, observe_min_max_, the
// range derivation, the fake-quant op, the un-fold by torch.where) and the backward the ops
// autograd ran through them, sums included: both bit for bit the unfused path.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <vector>

#include "../fake_quant.h"
#include "../fake_quant_math.h"
#include "../fold_weight_fake_quant.h"
#include "../observe_fake_quant.h"
#include "edgeqat/ops.h"
#include "fake_quant_composite.h"

namespace edgeqat::ops {
namespace {

// The dims autograd's sum_to reduces to bring a weight-shaped gradient to [C, 1, ..., 1]:
// every dim after the first whose size is not 1.
std::vector<int64_t> reduce_dims(const at::Tensor& weight) {
  std::vector<int64_t> dims;
  for (int64_t d = 1; d < weight.dim(); ++d) {
    if (weight.sym_size(d) != 1) {
      dims.push_back(d);
    }
  }
  return dims;
}

at::Tensor sum_to_channels(const at::Tensor& t, const std::vector<int64_t>& dims) {
  return dims.empty() ? t : t.sum(dims, /*keepdim=*/true);
}

// (zero, safe): f == 0 per channel, and f with those channels replaced by 1 (ConvBn2d's
// torch.where(zero, ones, f)).
std::pair<at::Tensor, at::Tensor> zero_and_safe(const at::Tensor& f) {
  at::Tensor zero = f.eq(0);
  return {zero, at::where(zero, at::ones({}, f.options()), f)};
}

// The kernel range the fake-quant kernels quantize with (fake_quant_composite's nudge, as ATen
// ops, the same operations as detail::nudge; [0, 0] when the range is degenerate), in the
// compute dtype, shaped like min / max.
std::pair<at::Tensor, at::Tensor> nudged_range(const at::Tensor& min, const at::Tensor& max,
                                               at::ScalarType compute, int64_t num_bits,
                                               bool narrow_range) {
  const auto nudged = composite::nudge(min.to(compute), max.to(compute), num_bits, narrow_range);
  return {nudged.lo, nudged.hi};
}

// Where W * f lay inside the nudged range in the forward (detail::kInside): W * f recomputed
// as the forward computed it, compared in the compute dtype as the fake-quant kernels compare.
at::Tensor inside_range(const at::Tensor& weight, const at::Tensor& f, const at::Tensor& nudged_min,
                        const at::Tensor& nudged_max) {
  const at::Tensor folded = (weight * f).to(nudged_min.scalar_type());
  at::Tensor lo = nudged_min, hi = nudged_max;
  if (nudged_min.dim() == 1) {
    lo = factor_as_channels(nudged_min, weight);
    hi = factor_as_channels(nudged_max, weight);
  }
  return folded.ge(lo).logical_and(folded.le(hi));
}

at::Tensor fold_weight_fake_quant_composite(at::Tensor& observed_min, at::Tensor& observed_max,
                                            const at::Tensor& weight, const at::Tensor& factor,
                                            bool observe, double averaging_constant,
                                            bool accumulate, bool symmetric, int64_t num_bits,
                                            bool narrow_range, bool unfold) {
  return std::get<0>(fold_weight_fake_quant_composite_impl(
      observed_min, observed_max, weight, factor, observe, averaging_constant, accumulate,
      symmetric, num_bits, narrow_range, unfold, /*with_range=*/false));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> fold_weight_fake_quant_nudged_composite(
    at::Tensor& observed_min, at::Tensor& observed_max, const at::Tensor& weight,
    const at::Tensor& factor, bool observe, double averaging_constant, bool accumulate,
    bool symmetric, int64_t num_bits, bool narrow_range, bool unfold) {
  return fold_weight_fake_quant_composite_impl(observed_min, observed_max, weight, factor, observe,
                                               averaging_constant, accumulate, symmetric, num_bits,
                                               narrow_range, unfold,
                                               /*with_range=*/true);
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> fold_weight_fake_quant_composite_impl(
    at::Tensor& observed_min, at::Tensor& observed_max, const at::Tensor& weight,
    const at::Tensor& factor, bool observe, double averaging_constant, bool accumulate,
    bool symmetric, int64_t num_bits, bool narrow_range, bool unfold, bool with_range) {
  const auto axis = check_fold_weight_args(observed_min, observed_max, weight, factor,
                                           averaging_constant, num_bits);
  const at::Tensor f = factor_as_channels(factor, weight);
  const at::Tensor folded = weight * f;
  if (observe) {
    observe_min_max_(observed_min, observed_max, folded, axis, averaging_constant, accumulate);
  }
  const auto [lo, hi] = quant_range_from_observed(observed_min, observed_max, symmetric);
  // The fake-quant op checks the range (finite, not too wide) before anything is computed.
  const at::Tensor quantized =
      axis.has_value()
          ? fake_quant_with_min_max_vars_per_channel(folded, lo, hi, *axis, num_bits, narrow_range)
          : fake_quant_with_min_max_vars(folded, lo, hi, num_bits, narrow_range);
  at::Tensor nudged_min, nudged_max;
  if (with_range) {
    std::tie(nudged_min, nudged_max) =
        nudged_range(lo, hi, compute_dtype(weight.scalar_type()), num_bits, narrow_range);
  }
  if (!unfold) {
    return {quantized, nudged_min, nudged_max};
  }
  const auto [zero, safe] = zero_and_safe(f);
  return {at::where(zero, weight, quantized / safe), nudged_min, nudged_max};
}

std::tuple<at::Tensor, at::Tensor> fold_weight_fake_quant_backward_composite(
    const at::Tensor& grad, const at::Tensor& weight, const at::Tensor& factor,
    const at::Tensor& nudged_min, const at::Tensor& nudged_max,
    const std::optional<at::Tensor>& output, bool unfold) {
  check_fold_weight_backward_args(grad, weight, factor, nudged_min, nudged_max, output, unfold);
  const at::Tensor f = factor_as_channels(factor, weight);
  const auto dims = reduce_dims(weight);
  const at::Tensor inside = inside_range(weight, f, nudged_min, nudged_max);
  const at::Tensor zero_value = at::zeros({}, grad.options());
  const auto channels = factor.sym_sizes();
  if (!unfold) {
    // Wq = fq(W * f): the fake quant's straight-through gradient, then the product's.
    const at::Tensor t = at::where(inside, grad, zero_value);
    return {t * f, sum_to_channels(t * weight, dims).reshape_symint(channels)};
  }
  // output = where(zero, W, fq(W * f) / safe): autograd's ops in its order.
  const auto [zero, safe] = zero_and_safe(f);
  const at::Tensor grad_quotient = at::where(zero, zero_value, grad);
  const at::Tensor t = at::where(inside, grad_quotient / safe, zero_value);
  const at::Tensor grad_weight = at::where(zero, grad, zero_value) + t * f;
  const at::Tensor grad_safe = sum_to_channels(grad_quotient.neg() * (output->div(safe)), dims);
  const at::Tensor grad_factor = sum_to_channels(t * weight, dims).reshape_symint(channels) +
                                 at::where(zero, zero_value, grad_safe).reshape_symint(channels);
  return {grad_weight, grad_factor};
}

TORCH_LIBRARY_IMPL(edgeqat, CompositeExplicitAutograd, m) {
  m.impl("fold_weight_fake_quant_", fold_weight_fake_quant_composite);
  m.impl("_fold_weight_fake_quant_nudged_", fold_weight_fake_quant_nudged_composite);
  m.impl("_fold_weight_fake_quant_backward", fold_weight_fake_quant_backward_composite);
}

}  // namespace edgeqat::ops
