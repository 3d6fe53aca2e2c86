// Fused CPU kernels of fold_weight_fake_quant_ and its backward (see
// ../fold_weight_fake_quant.cpp for the definition).
//
// A conv weight is [C, ...] with each output channel one contiguous block of inner = numel / C
// elements (any dense layout with dim 0 outermost: contiguous, channels-last). Channels run in
// parallel. Forward, per channel and while its block is in cache: min / max of w * f (observe,
// per channel), the state entry's update and the nudged range, then one pass writing the output
// (fq(w * f), or fq(w * f) / f to un-fold). Per tensor, a first parallel pass finds every
// channel's min / max before the one range exists. Backward: one pass per channel that
// recomputes w * f against the saved nudged range (no mask kept), writes grad_weight and adds
// the channel's grad_factor terms in double.
//
// Element by element every value is rounded as the unfused ops round it (w * f, the fake-quant
// math of fake_quant_math.h, the divisions and products of autograd's formulas), so the output,
// the nudged range, the state and grad_weight are bit for bit the composite kernel's.
// grad_factor is a sum: here in double in a fixed order per channel (independent of the
// thread count), rounded once to the weight's dtype.
//
// float and double weights with factor and state of the same dtype take this path; everything
// else (half, bfloat16, other state dtypes, other layouts) runs the composite kernel.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/isinf.h>
#include <ATen/ops/isnan.h>
#include <ATen/ops/mul.h>
#include <c10/util/irange.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <iomanip>
#include <limits>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include "../fake_quant_math.h"
#include "tensor_layout.h"
#include "../fold_weight_fake_quant.h"
#include "fake_quant_span.h"


#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define EDGEQAT_FOLD_MULTIVERSION \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#elif defined(__x86_64__) && defined(__clang__)
#define EDGEQAT_FOLD_MULTIVERSION __attribute__((target_clones("avx512bw", "avx2", "default")))
#else
#define EDGEQAT_FOLD_MULTIVERSION
#endif

#if defined(__GNUC__) || defined(__clang__)
#define EDGEQAT_FOLD_INLINE inline __attribute__((always_inline))
#else
#define EDGEQAT_FOLD_INLINE inline
#endif

// ---------------------------------------------------------------------------
// Span loops over one channel's block (raw pointers, vectorized, one clone per
// instruction-set level as in fake_quant_span.cpp).
// ---------------------------------------------------------------------------
namespace edgeqat::detail::fold {

using detail::KernelRange;

template <typename T>
EDGEQAT_FOLD_INLINE void minmax_impl(const T* __restrict w, T f, int64_t n, T* lo_out,
                                     T* hi_out, int* nan_out) {
  T lo = std::numeric_limits<T>::infinity();
  T hi = -std::numeric_limits<T>::infinity();
  int nan = 0;
#pragma omp simd reduction(min : lo) reduction(max : hi) reduction(| : nan)
  for (int64_t i = 0; i < n; ++i) {
    const T v = w[i] * f;
    lo = v < lo ? v : lo;
    hi = v > hi ? v : hi;
    nan |= static_cast<int>(v != v);
  }
  *lo_out = lo;
  *hi_out = hi;
  *nan_out = nan;
}

// out[i] = fq(w[i] * f), divided by f to un-fold.
template <typename T>
EDGEQAT_FOLD_INLINE void forward_impl(const T* __restrict w, T f, T* __restrict out, int64_t n,
                                      const KernelRange<T>& r, bool divide) {
  const T lo = r.lo, hi = r.hi, scale = r.scale, zi = r.zero_index;
  if (divide) {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
      out[i] = fake_quant_value(w[i] * f, lo, hi, scale, zi) / f;
    }
  } else {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
      out[i] = fake_quant_value(w[i] * f, lo, hi, scale, zi);
    }
  }
}

// Blocks that fit in L1: an elementwise pass writes grad_weight and the float terms of the
// factor's gradient into scratch, a second widens the scratch to double. "Inside" is w * f
// within the nudged range [lo, hi] (NaN is not), as the forward's mask code kInside.
constexpr int64_t kBlock = 512;

template <typename T>
EDGEQAT_FOLD_INLINE double sum_in_double(const T* __restrict v, int64_t n) {
  double sum = 0.0;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < n; ++i) {
    sum += static_cast<double>(v[i]);
  }
  return sum;
}

// Not un-folded: t = inside ? g : 0, grad_w = t * f, terms t * w.
template <typename T>
EDGEQAT_FOLD_INLINE double backward_impl(const T* __restrict g, const T* __restrict w, T f,
                                         T lo, T hi, T* __restrict gw, int64_t n) {
  alignas(64) T terms[kBlock];
  double sum = 0.0;
  for (int64_t b = 0; b < n; b += kBlock) {
    const int64_t len = std::min(kBlock, n - b);
    const T* gb = g + b;
    const T* wb = w + b;
    T* ob = gw + b;
#pragma omp simd
    for (int64_t i = 0; i < len; ++i) {
      const T v = wb[i] * f;
      const T t = (v >= lo && v <= hi) ? gb[i] : T(0);
      ob[i] = t * f;
      terms[i] = t * wb[i];
    }
    sum += sum_in_double(terms, len);
  }
  return sum;
}

// Un-folded, f != 0: t = inside ? g / f : 0, grad_w = t * f + 0 (the + 0 is the torch.where
// branch autograd adds, which turns -0 into +0), terms t * w and -g * (out / f).
template <typename T>
EDGEQAT_FOLD_INLINE double backward_unfold_impl(const T* __restrict g, const T* __restrict w,
                                                const T* __restrict out, T f, T lo, T hi,
                                                T* __restrict gw, int64_t n) {
  alignas(64) T terms_w[kBlock];
  alignas(64) T terms_f[kBlock];
  double sum = 0.0;
  for (int64_t b = 0; b < n; b += kBlock) {
    const int64_t len = std::min(kBlock, n - b);
    const T* gb = g + b;
    const T* wb = w + b;
    const T* yb = out + b;
    T* ob = gw + b;
#pragma omp simd
    for (int64_t i = 0; i < len; ++i) {
      const T gi = gb[i];
      const T v = wb[i] * f;
      const T t = (v >= lo && v <= hi) ? gi / f : T(0);
      ob[i] = t * f + T(0);
      terms_w[i] = t * wb[i];
      terms_f[i] = -gi * (yb[i] / f);
    }
    sum += sum_in_double(terms_w, len);
    sum += sum_in_double(terms_f, len);
  }
  return sum;
}

EDGEQAT_FOLD_MULTIVERSION void minmax_span(const float* w, float f, int64_t n, float* lo,
                                           float* hi, int* nan) {
  minmax_impl(w, f, n, lo, hi, nan);
}
EDGEQAT_FOLD_MULTIVERSION void minmax_span(const double* w, double f, int64_t n, double* lo,
                                           double* hi, int* nan) {
  minmax_impl(w, f, n, lo, hi, nan);
}
EDGEQAT_FOLD_MULTIVERSION void forward_span(const float* w, float f, float* out, int64_t n,
                                            const KernelRange<float>& r, bool divide) {
  forward_impl(w, f, out, n, r, divide);
}
EDGEQAT_FOLD_MULTIVERSION void forward_span(const double* w, double f, double* out, int64_t n,
                                            const KernelRange<double>& r, bool divide) {
  forward_impl(w, f, out, n, r, divide);
}
EDGEQAT_FOLD_MULTIVERSION double backward_span(const float* g, const float* w, float f,
                                               float lo, float hi, float* gw, int64_t n) {
  return backward_impl(g, w, f, lo, hi, gw, n);
}
EDGEQAT_FOLD_MULTIVERSION double backward_span(const double* g, const double* w, double f,
                                               double lo, double hi, double* gw, int64_t n) {
  return backward_impl(g, w, f, lo, hi, gw, n);
}
EDGEQAT_FOLD_MULTIVERSION double backward_unfold_span(const float* g, const float* w,
                                                      const float* out, float f, float lo,
                                                      float hi, float* gw, int64_t n) {
  return backward_unfold_impl(g, w, out, f, lo, hi, gw, n);
}
EDGEQAT_FOLD_MULTIVERSION double backward_unfold_span(const double* g, const double* w,
                                                      const double* out, double f, double lo,
                                                      double hi, double* gw, int64_t n) {
  return backward_unfold_impl(g, w, out, f, lo, hi, gw, n);
}

}  // namespace edgeqat::detail::fold

// ---------------------------------------------------------------------------
// The kernels
// ---------------------------------------------------------------------------
namespace edgeqat::ops {
namespace {

namespace fold = detail::fold;
using detail::KernelRange;

constexpr int64_t kGrain = 32768;  // elements per parallel task, at least

using cpu::prefer_huge_pages;  // weight-sized outputs fault in 4 KiB at a time otherwise

// Whether each output channel is one contiguous block of numel / C elements in memory.
bool channel_blocks(const at::Tensor& t) {
  if (!t.is_non_overlapping_and_dense()) {
    return false;
  }
  const int64_t channels = t.size(0);
  return channels <= 1 || t.stride(0) * channels == t.numel();
}

int64_t channel_grain(int64_t inner) {
  return std::max<int64_t>(1, kGrain / std::max<int64_t>(1, inner));
}

template <typename T>
T entry(const at::Tensor& t, int64_t i) {
  return t.const_data_ptr<T>()[t.dim() ? i * t.stride(0) : 0];
}

template <typename T>
void set_entry(at::Tensor& t, int64_t i, T v) {
  t.mutable_data_ptr<T>()[t.dim() ? i * t.stride(0) : 0] = v;
}

// observe_min_max_'s update of one side of one entry (as the observe_fake_quant_ CPU kernel
// computes it for a state in the math dtype): the batch value when fresh or for the last
// value; at::minimum / at::maximum when accumulating; otherwise the EMA old + (batch - old) * c
// with each operation rounded to T and c rounded to T, as ATen rounds a double scalar operand.
template <typename T>
T update_side(T old, T batch, bool fresh, bool is_min, double c, bool accumulate) {
  if (fresh || (!accumulate && c == 1.0)) {
    return batch;
  }
  if (accumulate) {
    return is_min ? (batch < old ? batch : old) : (old < batch ? batch : old);
  }
  const T diff = batch - old;
  const T step = diff * static_cast<T>(c);
  return old + step;
}

// at::maximum: NaN if either is NaN.
template <typename T>
T nan_maximum(T a, T b) {
  return (a != a || b != b) ? std::numeric_limits<T>::quiet_NaN() : std::max(a, b);
}

template <typename T>
std::string show(T v) {
  if (v != v) {
    return "nan";  // not "-nan"
  }
  std::ostringstream out;
  out << std::setprecision(std::is_same_v<T, double> ? 17 : 9) << v;
  return out.str();
}

// The range of one entry as FakeQuantizer._derived_range derives it from the state, checked as
// the fake-quant op checks its range, then nudged. Returns false (range untouched) when the
// range is not usable: a non-finite end or width.
template <typename T>
bool kernel_range(T state_min, T state_max, bool symmetric, int64_t qmin, int64_t qmax,
                  KernelRange<T>* out) {
  T lo = state_min > T(0) ? T(0) : state_min;
  T hi = state_max < T(0) ? T(0) : state_max;
  if (symmetric) {
    const T bound = nan_maximum(-lo, hi);
    lo = -bound;
    hi = bound;
  }
  if (!std::isfinite(lo) || !std::isfinite(hi) || !(lo <= hi) || !std::isfinite(hi - lo)) {
    return false;
  }
  *out = KernelRange<T>::from(detail::nudge(lo, hi, qmin, qmax));
  return true;
}

[[noreturn]] void fail_non_finite_batch(const at::Tensor& weight, const at::Tensor& factor) {
  const at::Tensor folded = at::mul(weight, factor_as_channels(factor, weight));
  TORCH_CHECK(false, kFoldWeightFakeQuantOp, ": weight * factor contains ",
              at::isnan(folded).sum().item<int64_t>(), " NaN and ",
              at::isinf(folded).sum().item<int64_t>(),
              " infinite value(s); the observed range would be lost");
}

template <typename T>
[[noreturn]] void fail_range(const at::Tensor& observed_min, const at::Tensor& observed_max,
                             int64_t c, T state_min, T state_max, bool symmetric) {
  const std::string at_c = observed_min.dim() ? "[" + std::to_string(c) + "]" : std::string();
  const T lo = state_min > T(0) ? T(0) : state_min;
  const T hi = state_max < T(0) ? T(0) : state_max;
  TORCH_CHECK(false, kFoldWeightFakeQuantOp, ": observed_min", at_c, " = ", show(state_min),
              " and observed_max", at_c, " = ", show(state_max), " give the quantization range [",
              show(symmetric ? -nan_maximum(-lo, hi) : lo), ", ",
              show(symmetric ? nan_maximum(-lo, hi) : hi), "]", symmetric ? " (symmetric)" : "",
              ", which is not finite or too wide (max - min overflows)");
}

template <typename T>
void forward_typed(at::Tensor& observed_min, at::Tensor& observed_max, const at::Tensor& weight,
                   const at::Tensor& factor, bool per_channel, bool observe, double c,
                   bool accumulate, bool symmetric, int64_t num_bits, bool narrow_range,
                   bool unfold, at::Tensor& out, at::Tensor* nudged_min,
                   at::Tensor* nudged_max) {
  const int64_t channels = weight.size(0);
  const int64_t numel = weight.numel();
  const int64_t inner = channels > 0 ? numel / channels : 0;
  const T* wp = weight.const_data_ptr<T>();
  const T* fp = factor.const_data_ptr<T>();
  const int64_t fs = factor.stride(0);
  T* op = out.mutable_data_ptr<T>();
  const int64_t qmin = detail::quant_min(narrow_range);
  const int64_t qmax = detail::quant_max(num_bits);
  const bool observing = observe && numel > 0;
  const int64_t grain = channel_grain(inner);

  // One channel's output pass with its range.
  const auto write_channel = [&](int64_t ch, const KernelRange<T>& range) {
    const T f = fp[ch * fs];
    const T* w = wp + ch * inner;
    T* y = op + ch * inner;
    if (unfold && f == T(0)) {
      std::copy(w, w + inner, y);  // gamma = 0: the float weight
      return;
    }
    fold::forward_span(w, f, y, inner, range, unfold);
  };
  // The nudged range for the backward, entry by entry.
  const auto save_range = [&](int64_t i, const KernelRange<T>& range) {
    if (nudged_min != nullptr) {
      nudged_min->mutable_data_ptr<T>()[i] = range.lo;
      nudged_max->mutable_data_ptr<T>()[i] = range.hi;
    }
  };

  if (per_channel) {
    // Everything per channel; the state is written once every channel has passed its checks.
    std::vector<T> new_min(channels), new_max(channels);
    std::vector<char> bad_batch(channels, 0), bad_range(channels, 0);
    at::parallel_for(0, channels, grain, [&](int64_t begin, int64_t end) {
      for (int64_t ch = begin; ch < end; ++ch) {
        T lo = entry<T>(observed_min, ch), hi = entry<T>(observed_max, ch);
        if (observing) {
          T batch_lo, batch_hi;
          int nan = 0;
          fold::minmax_span(wp + ch * inner, fp[ch * fs], inner, &batch_lo, &batch_hi, &nan);
          if (nan || !std::isfinite(batch_lo) || !std::isfinite(batch_hi)) {
            bad_batch[ch] = 1;
            continue;
          }
          const bool fresh = lo > hi;
          lo = update_side(lo, batch_lo, fresh, /*is_min=*/true, c, accumulate);
          hi = update_side(hi, batch_hi, fresh, /*is_min=*/false, c, accumulate);
        }
        new_min[ch] = lo;
        new_max[ch] = hi;
        KernelRange<T> range;
        if (!kernel_range(lo, hi, symmetric, qmin, qmax, &range)) {
          bad_range[ch] = 1;
          continue;
        }
        save_range(ch, range);
        write_channel(ch, range);
      }
    });
    if (std::any_of(bad_batch.begin(), bad_batch.end(), [](char b) { return b != 0; })) {
      fail_non_finite_batch(weight, factor);
    }
    for (const auto ch : c10::irange(channels)) {
      if (bad_range[ch]) {
        fail_range(observed_min, observed_max, ch, new_min[ch], new_max[ch], symmetric);
      }
    }
    if (observing) {
      for (const auto ch : c10::irange(channels)) {
        set_entry(observed_min, ch, new_min[ch]);
        set_entry(observed_max, ch, new_max[ch]);
      }
    }
    return;
  }

  // Per tensor: the batch range of every channel first.
  T lo = entry<T>(observed_min, 0), hi = entry<T>(observed_max, 0);
  if (observing) {
    std::vector<T> batch_lo(channels), batch_hi(channels);
    std::vector<int> nan(channels, 0);
    at::parallel_for(0, channels, grain, [&](int64_t begin, int64_t end) {
      for (int64_t ch = begin; ch < end; ++ch) {
        fold::minmax_span(wp + ch * inner, fp[ch * fs], inner, &batch_lo[ch], &batch_hi[ch],
                          &nan[ch]);
      }
    });
    T all_lo = std::numeric_limits<T>::infinity(), all_hi = -std::numeric_limits<T>::infinity();
    bool any_nan = false;
    for (const auto ch : c10::irange(channels)) {
      any_nan = any_nan || nan[ch] != 0;
      all_lo = std::min(all_lo, batch_lo[ch]);
      all_hi = std::max(all_hi, batch_hi[ch]);
    }
    if (any_nan || !std::isfinite(all_lo) || !std::isfinite(all_hi)) {
      fail_non_finite_batch(weight, factor);
    }
    const bool fresh = lo > hi;
    lo = update_side(lo, all_lo, fresh, /*is_min=*/true, c, accumulate);
    hi = update_side(hi, all_hi, fresh, /*is_min=*/false, c, accumulate);
  }
  KernelRange<T> range;
  if (!kernel_range(lo, hi, symmetric, qmin, qmax, &range)) {
    fail_range(observed_min, observed_max, 0, lo, hi, symmetric);
  }
  save_range(0, range);
  if (observing) {
    set_entry(observed_min, 0, lo);
    set_entry(observed_max, 0, hi);
  }
  at::parallel_for(0, channels, grain, [&](int64_t begin, int64_t end) {
    for (int64_t ch = begin; ch < end; ++ch) {
      write_channel(ch, range);
    }
  });
}

bool fused_dtype(at::ScalarType t) { return t == at::kFloat || t == at::kDouble; }

std::tuple<at::Tensor, at::Tensor, at::Tensor> fold_weight_fake_quant_cpu_impl(
    at::Tensor& observed_min, at::Tensor& observed_max, const at::Tensor& weight,
    const at::Tensor& factor, bool observe, double averaging_constant, bool accumulate,
    bool symmetric, int64_t num_bits, bool narrow_range, bool unfold, bool with_range) {
  const auto axis = check_fold_weight_args(observed_min, observed_max, weight, factor,
                                           averaging_constant, num_bits);
  const auto dtype = weight.scalar_type();
  if (!fused_dtype(dtype) || observed_min.scalar_type() != dtype ||
      observed_max.scalar_type() != dtype || !channel_blocks(weight)) {
    return fold_weight_fake_quant_composite_impl(observed_min, observed_max, weight, factor,
                                                 observe, averaging_constant, accumulate,
                                                 symmetric, num_bits, narrow_range, unfold,
                                                 with_range);
  }
  at::Tensor out = at::empty_like(weight);
  prefer_huge_pages(out);
  at::Tensor nudged_min, nudged_max;
  if (with_range) {
    // Shaped like the state, contiguous, in the compute dtype (the weight's here).
    nudged_min = at::empty(observed_min.sizes(), weight.options());
    nudged_max = at::empty(observed_min.sizes(), weight.options());
  }
  AT_DISPATCH_FLOATING_TYPES(dtype, kFoldWeightFakeQuantOp, [&] {
    forward_typed<scalar_t>(observed_min, observed_max, weight, factor, axis.has_value(), observe,
                            averaging_constant, accumulate, symmetric, num_bits, narrow_range,
                            unfold, out, with_range ? &nudged_min : nullptr,
                            with_range ? &nudged_max : nullptr);
  });
  return {out, nudged_min, nudged_max};
}

at::Tensor fold_weight_fake_quant_cpu(at::Tensor& observed_min, at::Tensor& observed_max,
                                      const at::Tensor& weight, const at::Tensor& factor,
                                      bool observe, double averaging_constant, bool accumulate,
                                      bool symmetric, int64_t num_bits, bool narrow_range,
                                      bool unfold) {
  return std::get<0>(fold_weight_fake_quant_cpu_impl(observed_min, observed_max, weight, factor,
                                                     observe, averaging_constant, accumulate,
                                                     symmetric, num_bits, narrow_range, unfold,
                                                     /*with_range=*/false));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> fold_weight_fake_quant_nudged_cpu(
    at::Tensor& observed_min, at::Tensor& observed_max, const at::Tensor& weight,
    const at::Tensor& factor, bool observe, double averaging_constant, bool accumulate,
    bool symmetric, int64_t num_bits, bool narrow_range, bool unfold) {
  return fold_weight_fake_quant_cpu_impl(observed_min, observed_max, weight, factor, observe,
                                         averaging_constant, accumulate, symmetric, num_bits,
                                         narrow_range, unfold, /*with_range=*/true);
}

template <typename T>
void backward_typed(const at::Tensor& grad, const at::Tensor& weight, const at::Tensor& factor,
                    const at::Tensor& nudged_min, const at::Tensor& nudged_max,
                    const at::Tensor& output, bool unfold, at::Tensor& grad_weight,
                    at::Tensor& grad_factor) {
  const int64_t channels = weight.size(0);
  const int64_t inner = channels > 0 ? weight.numel() / channels : 0;
  const T* gp = grad.const_data_ptr<T>();
  const T* wp = weight.const_data_ptr<T>();
  const T* yp = unfold ? output.const_data_ptr<T>() : nullptr;
  const T* fp = factor.const_data_ptr<T>();
  const int64_t fs = factor.stride(0);
  T* gwp = grad_weight.mutable_data_ptr<T>();
  T* gfp = grad_factor.mutable_data_ptr<T>();
  at::parallel_for(0, channels, channel_grain(inner), [&](int64_t begin, int64_t end) {
    for (int64_t ch = begin; ch < end; ++ch) {
      const T f = fp[ch * fs];
      const T lo = entry<T>(nudged_min, ch), hi = entry<T>(nudged_max, ch);
      const int64_t off = ch * inner;
      double sum = 0.0;
      if (!unfold) {
        sum = fold::backward_span(gp + off, wp + off, f, lo, hi, gwp + off, inner);
      } else if (f != T(0)) {
        sum = fold::backward_unfold_span(gp + off, wp + off, yp + off, f, lo, hi, gwp + off,
                                         inner);
      } else {
        // gamma = 0: the float weight's gradient g, plus the (zero) gradient through the
        // quantized branch, 0 * f, as autograd adds them; grad_factor is 0 (torch.where).
        for (const auto i : c10::irange(inner)) {
          gwp[off + i] = gp[off + i] + T(0) * f;
        }
      }
      gfp[ch] = static_cast<T>(sum);
    }
  });
}

std::tuple<at::Tensor, at::Tensor> fold_weight_fake_quant_backward_cpu(
    const at::Tensor& grad, const at::Tensor& weight, const at::Tensor& factor,
    const at::Tensor& nudged_min, const at::Tensor& nudged_max,
    const std::optional<at::Tensor>& output, bool unfold) {
  check_fold_weight_backward_args(grad, weight, factor, nudged_min, nudged_max, output, unfold);
  const auto strides = weight.strides();
  if (!fused_dtype(weight.scalar_type()) || !channel_blocks(weight) ||
      grad.strides() != strides || (unfold && output->strides() != strides)) {
    // Layouts the forward did not make (or a gradient in another layout): the composite,
    // whose output strides are also the Meta kernel's.
    return fold_weight_fake_quant_backward_composite(grad, weight, factor, nudged_min,
                                                     nudged_max, output, unfold);
  }
  at::Tensor grad_weight = at::empty_like(weight);
  prefer_huge_pages(grad_weight);
  at::Tensor grad_factor = at::empty({weight.size(0)}, factor.options());
  AT_DISPATCH_FLOATING_TYPES(weight.scalar_type(), kFoldWeightBackwardOp, [&] {
    backward_typed<scalar_t>(grad, weight, factor, nudged_min, nudged_max,
                             unfold ? *output : at::Tensor(), unfold, grad_weight, grad_factor);
  });
  return {grad_weight, grad_factor};
}

}  // namespace

TORCH_LIBRARY_IMPL(edgeqat, CPU, m) {
  m.impl("fold_weight_fake_quant_", fold_weight_fake_quant_cpu);
  m.impl("_fold_weight_fake_quant_nudged_", fold_weight_fake_quant_nudged_cpu);
  m.impl("_fold_weight_fake_quant_backward", fold_weight_fake_quant_backward_cpu);
}

}  // namespace edgeqat::ops
