// Fused CPU kernel of observe_fake_quant_ (see ../observe_fake_quant.cpp):
// one parallel read pass over x for the batch min / max (minmax_reduce.h),
// the state update in plain C++ on the host, then the fused fake-quant
// kernel. With clamp bounds (a fused ReLU / ReLU6) the batch range is clamped
// on the host: min and max commute with clamping, so this is the range of
// clamp(x) without materialising it. Against observe_min_max_ followed by
// the fake-quant op this saves
// the dozen small tensor ops of the state update and of the range
// derivation (and, from Python, the interpreter between them); x is still
// read twice, since the range must be known before the first element can be
// quantized.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/util/irange.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <type_traits>
#include <vector>

#include "../fake_quant.h"
#include "../observe_fake_quant.h"
#include "edgeqat/ops.h"
#include "minmax_reduce.h"

namespace edgeqat::ops {
namespace {

// One side (min or max) of one observer entry in the state dtype T, rounded
// as the ATen ops of the composite observe_min_max_ kernel round it:
//  - EMA old + (batch - old) * c: each operation rounded to T (ATen computes
//    half and bfloat16 in float and rounds every result), c rounded to the
//    math type (float for float / half / bfloat16, double for double), as
//    ATen rounds a double scalar operand;
//  - accumulate: at::minimum / at::maximum, i.e. std::min / std::max.
template <typename T>
T update_side(T old, T batch, bool fresh, bool is_min, double c, bool accumulate) {
  using math_t = std::conditional_t<std::is_same_v<T, double>, double, float>;
  if (fresh || (!accumulate && c == 1.0)) {
    return batch;  // first batch, or the last batch exactly
  }
  const math_t o = static_cast<math_t>(old), b = static_cast<math_t>(batch);
  if (accumulate) {
    return is_min ? (b < o ? batch : old) : (o < b ? batch : old);
  }
  const T diff = static_cast<T>(b - o);
  const T step = static_cast<T>(static_cast<math_t>(diff) * static_cast<math_t>(c));
  return static_cast<T>(o + static_cast<math_t>(step));
}

// Strided element i of a 0-dim or 1-D CPU tensor.
template <typename T>
T& entry(at::Tensor& t, int64_t i) {
  return t.mutable_data_ptr<T>()[t.dim() ? i * t.stride(0) : 0];
}

double as_double(const at::Tensor& t, int64_t i) {
  double v = 0.0;
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, t.scalar_type(), kObserveFakeQuantOp, [&] {
        v = static_cast<double>(t.const_data_ptr<scalar_t>()[t.dim() ? i * t.stride(0) : 0]);
      });
  return v;
}

void update_side_tensor(at::Tensor& state, const std::vector<double>& batch,
                        const std::vector<char>& fresh, bool is_min, double c, bool accumulate) {
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, state.scalar_type(), kObserveFakeQuantOp, [&] {
        for (const auto i : c10::irange(static_cast<int64_t>(batch.size()))) {
          scalar_t& s = entry<scalar_t>(state, i);
          s = update_side(s, static_cast<scalar_t>(batch[i]), fresh[i] != 0, is_min, c, accumulate);
        }
      });
}

bool rounds_finite(const std::vector<double>& values, at::ScalarType dtype) {
  bool finite = true;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, kObserveFakeQuantOp, [&] {
    for (const double v : values) {
      finite = finite && std::isfinite(static_cast<double>(static_cast<scalar_t>(v)));
    }
  });
  return finite;
}

// The batch range of clamp(x, clamp_min, clamp_max) from x's (NaN stays
// NaN, as at::clamp keeps it).
void clamp_batch_range(cpu::MinMax& batch, std::optional<double> clamp_min,
                       std::optional<double> clamp_max) {
  for (auto* side : {&batch.lo, &batch.hi}) {
    for (double& v : *side) {
      if (clamp_min.has_value() && v < *clamp_min) v = *clamp_min;
      if (clamp_max.has_value() && v > *clamp_max) v = *clamp_max;
    }
  }
}

// observe_min_max_'s update of the state from the batch range (of `observed`,
// x or clamp(x)), with its checks and messages. Nothing is written before
// every check has passed.
void update_observed_state(at::Tensor& observed_min, at::Tensor& observed_max,
                           const std::function<at::Tensor()>& observed, const cpu::MinMax& batch,
                           double c, bool accumulate) {
  const char* op = kObserveFakeQuantOp;
  const auto finite = [](const std::vector<double>& v) {
    return std::all_of(v.begin(), v.end(), [](double e) { return std::isfinite(e); });
  };
  if (batch.has_nan || !finite(batch.lo) || !finite(batch.hi)) {
    const at::Tensor x = observed();  // only to count the bad values for the message
    TORCH_CHECK(false, op, ": x contains ", at::isnan(x).sum().item<int64_t>(), " NaN and ",
                at::isinf(x).sum().item<int64_t>(),
                " infinite value(s); the observed range would be lost");
  }
  // Each side in its own dtype (observe_min_max_ checks both in the dtype of
  // running_min only, and lets a narrower running_max overflow to inf).
  for (const auto& [state, values] :
       {std::pair<const at::Tensor&, const std::vector<double>&>{observed_min, batch.lo},
        std::pair<const at::Tensor&, const std::vector<double>&>{observed_max, batch.hi}}) {
    TORCH_CHECK(rounds_finite(values, state.scalar_type()), op, ": the batch range [",
                *std::min_element(batch.lo.begin(), batch.lo.end()), ", ",
                *std::max_element(batch.hi.begin(), batch.hi.end()), "] overflows the state dtype ",
                state.scalar_type());
  }
  // "Nothing observed yet" (min > max) compares the two sides exactly, as
  // the promoted comparison of the composite kernel does.
  const int64_t n = static_cast<int64_t>(batch.lo.size());
  std::vector<char> fresh(n);
  for (const auto i : c10::irange(n)) {
    fresh[i] = as_double(observed_min, i) > as_double(observed_max, i);
  }
  update_side_tensor(observed_min, batch.lo, fresh, /*is_min=*/true, c, accumulate);
  update_side_tensor(observed_max, batch.hi, fresh, /*is_min=*/false, c, accumulate);
}

// The range FakeQuantizer.observed_range() derives, computed on the host in
// the state dtype (clamp to contain 0, symmetric bound), as 0-dim or 1-D CPU
// tensors for the fake-quant kernel. The sign of a zero may differ from the
// ATen ops' result; a zero end is nudged identically either way.
std::pair<at::Tensor, at::Tensor> host_quant_range(const at::Tensor& observed_min,
                                                   const at::Tensor& observed_max, bool symmetric) {
  at::Tensor lo = at::empty(observed_min.sizes(), observed_min.options());
  at::Tensor hi = at::empty(observed_max.sizes(), observed_max.options());
  const int64_t n = observed_min.numel();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, observed_min.scalar_type(), kObserveFakeQuantOp, [&] {
        for (const auto i : c10::irange(n)) {
          const scalar_t v = static_cast<scalar_t>(as_double(observed_min, i));
          entry<scalar_t>(lo, i) = static_cast<double>(v) > 0.0 ? scalar_t(0) : v;
        }
      });
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, observed_max.scalar_type(), kObserveFakeQuantOp, [&] {
        for (const auto i : c10::irange(n)) {
          const scalar_t v = static_cast<scalar_t>(as_double(observed_max, i));
          entry<scalar_t>(hi, i) = static_cast<double>(v) < 0.0 ? scalar_t(0) : v;
        }
      });
  if (!symmetric) {
    return {lo, hi};
  }
  // max(-lo, hi) in the promoted dtype (exact for the values involved).
  const auto dtype = at::promote_types(lo.scalar_type(), hi.scalar_type());
  at::Tensor b_lo = at::empty(lo.sizes(), lo.options().dtype(dtype));
  at::Tensor b_hi = at::empty(lo.sizes(), lo.options().dtype(dtype));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, kObserveFakeQuantOp, [&] {
    for (const auto i : c10::irange(n)) {
      const double b = std::max(-as_double(lo, i), as_double(hi, i));
      entry<scalar_t>(b_lo, i) = static_cast<scalar_t>(-b);
      entry<scalar_t>(b_hi, i) = static_cast<scalar_t>(b);
    }
  });
  return {b_lo, b_hi};
}

std::tuple<at::Tensor, at::Tensor> observe_fake_quant_cpu_impl(
    at::Tensor& observed_min, at::Tensor& observed_max, const at::Tensor& x_in,
    std::optional<int64_t> axis_in, double averaging_constant, bool accumulate, bool symmetric,
    int64_t num_bits, bool narrow_range, std::optional<double> clamp_min,
    std::optional<double> clamp_max, bool with_mask) {
  const auto axis =
      check_observe_fake_quant_args(observed_min, observed_max, x_in, axis_in, averaging_constant,
                                    num_bits, clamp_min, clamp_max);
  const at::Tensor x = dense(x_in);
  if (x.numel() > 0) {
    cpu::MinMax batch = cpu::min_max(x, axis);
    clamp_batch_range(batch, clamp_min, clamp_max);
    const auto observed = [&] {
      return clamp_min.has_value() || clamp_max.has_value()
                 ? at::clamp(
                       x,
                       clamp_min.has_value() ? std::optional<at::Scalar>(*clamp_min) : std::nullopt,
                       clamp_max.has_value() ? std::optional<at::Scalar>(*clamp_max) : std::nullopt)
                 : x;
    };
    update_observed_state(observed_min, observed_max, observed, batch, averaging_constant,
                          accumulate);
  }
  const auto [lo, hi] = host_quant_range(observed_min, observed_max, symmetric);
  // The fused fake-quant kernel itself (this kernel runs below autograd).
  at::AutoDispatchBelowADInplaceOrView guard;
  return fake_quant_with_range(x, lo, hi, axis, num_bits, narrow_range, with_mask);
}

at::Tensor observe_fake_quant_cpu(at::Tensor& observed_min, at::Tensor& observed_max,
                                  const at::Tensor& x, std::optional<int64_t> axis,
                                  double averaging_constant, bool accumulate, bool symmetric,
                                  int64_t num_bits, bool narrow_range,
                                  std::optional<double> clamp_min,
                                  std::optional<double> clamp_max) {
  return std::get<0>(observe_fake_quant_cpu_impl(
      observed_min, observed_max, x, axis, averaging_constant, accumulate, symmetric, num_bits,
      narrow_range, clamp_min, clamp_max, false));
}

std::tuple<at::Tensor, at::Tensor> observe_fake_quant_cachemask_cpu(
    at::Tensor& observed_min, at::Tensor& observed_max, const at::Tensor& x,
    std::optional<int64_t> axis, double averaging_constant, bool accumulate, bool symmetric,
    int64_t num_bits, bool narrow_range, std::optional<double> clamp_min,
    std::optional<double> clamp_max) {
  return observe_fake_quant_cpu_impl(observed_min, observed_max, x, axis, averaging_constant,
                                     accumulate, symmetric, num_bits, narrow_range, clamp_min,
                                     clamp_max, true);
}

}  // namespace

TORCH_LIBRARY_IMPL(edgeqat, CPU, m) {
  m.impl("observe_fake_quant_", observe_fake_quant_cpu);
  m.impl("_observe_fake_quant_cachemask_", observe_fake_quant_cachemask_cpu);
}

}  // namespace edgeqat::ops
