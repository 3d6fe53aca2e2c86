// Vectorized span loops; see fake_quant_span.h. Each public function is
// compiled for several instruction sets (GCC/Clang function multiversioning)
// and the best one for the running CPU is picked at load time, so one binary
// is portable and still uses AVX2/AVX-512 where present. SSE4.1 (part of
// every clone but "default") is what turns std::floor into one instruction.
#include "fake_quant_span.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define EDGEQAT_MULTIVERSION __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define EDGEQAT_MULTIVERSION
#endif

#if defined(__GNUC__) || defined(__clang__)
#define EDGEQAT_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define EDGEQAT_ALWAYS_INLINE inline
#endif

namespace edgeqat::detail {
namespace {

template <typename T>
EDGEQAT_ALWAYS_INLINE void forward_uniform(const T* __restrict x, T* __restrict y,
                                           uint8_t* __restrict mask, int64_t n,
                                           const KernelRange<T>& r) {
  const T lo = r.lo, hi = r.hi, scale = r.scale, zi = r.zero_index;
  if (mask != nullptr) {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
      y[i] = fake_quant_value(x[i], lo, hi, scale, zi);
      mask[i] = mask_code(x[i], lo, hi);
    }
  } else {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
      y[i] = fake_quant_value(x[i], lo, hi, scale, zi);
    }
  }
}

template <typename T>
EDGEQAT_ALWAYS_INLINE void forward_positions(const T* __restrict x, T* __restrict y,
                                             uint8_t* __restrict mask, int64_t n,
                                             const KernelRangeArrays<T>& r) {
  const T* __restrict lo = r.lo;
  const T* __restrict hi = r.hi;
  const T* __restrict scale = r.scale;
  const T* __restrict zi = r.zero_index;
  if (mask != nullptr) {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
      y[i] = fake_quant_value(x[i], lo[i], hi[i], scale[i], zi[i]);
      mask[i] = mask_code(x[i], lo[i], hi[i]);
    }
  } else {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
      y[i] = fake_quant_value(x[i], lo[i], hi[i], scale[i], zi[i]);
    }
  }
}

template <typename T>
EDGEQAT_ALWAYS_INLINE void backward_sums(const T* __restrict g, const uint8_t* __restrict mask,
                                         T* __restrict dx, int64_t n, double* below_out,
                                         double* above_out) {
  double below = 0.0, above = 0.0;
#pragma omp simd reduction(+ : below, above)
  for (int64_t i = 0; i < n; ++i) {
    const uint8_t m = mask[i];
    dx[i] = m == kInside ? g[i] : T(0);
    below += m == kBelow ? static_cast<double>(g[i]) : 0.0;
    above += m == kAbove ? static_cast<double>(g[i]) : 0.0;
  }
  *below_out = below;
  *above_out = above;
}

template <typename T>
EDGEQAT_ALWAYS_INLINE void backward_positions(const T* __restrict g,
                                              const uint8_t* __restrict mask, T* __restrict dx,
                                              int64_t n, double* __restrict below,
                                              double* __restrict above) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const uint8_t m = mask[i];
    dx[i] = m == kInside ? g[i] : T(0);
    below[i] += m == kBelow ? static_cast<double>(g[i]) : 0.0;
    above[i] += m == kAbove ? static_cast<double>(g[i]) : 0.0;
  }
}

}  // namespace

EDGEQAT_MULTIVERSION void fake_quant_span(const float* x, float* y, uint8_t* mask, int64_t n,
                                          const KernelRange<float>& r) {
  forward_uniform(x, y, mask, n, r);
}
EDGEQAT_MULTIVERSION void fake_quant_span(const double* x, double* y, uint8_t* mask, int64_t n,
                                          const KernelRange<double>& r) {
  forward_uniform(x, y, mask, n, r);
}
EDGEQAT_MULTIVERSION void fake_quant_span(const float* x, float* y, uint8_t* mask, int64_t n,
                                          const KernelRangeArrays<float>& r) {
  forward_positions(x, y, mask, n, r);
}
EDGEQAT_MULTIVERSION void fake_quant_span(const double* x, double* y, uint8_t* mask, int64_t n,
                                          const KernelRangeArrays<double>& r) {
  forward_positions(x, y, mask, n, r);
}
EDGEQAT_MULTIVERSION void fake_quant_grad_span(const float* g, const uint8_t* mask, float* dx,
                                               int64_t n, double* below, double* above) {
  backward_sums(g, mask, dx, n, below, above);
}
EDGEQAT_MULTIVERSION void fake_quant_grad_span(const double* g, const uint8_t* mask, double* dx,
                                               int64_t n, double* below, double* above) {
  backward_sums(g, mask, dx, n, below, above);
}
EDGEQAT_MULTIVERSION void fake_quant_grad_span_positions(const float* g, const uint8_t* mask,
                                                         float* dx, int64_t n, double* below,
                                                         double* above) {
  backward_positions(g, mask, dx, n, below, above);
}
EDGEQAT_MULTIVERSION void fake_quant_grad_span_positions(const double* g, const uint8_t* mask,
                                                         double* dx, int64_t n, double* below,
                                                         double* above) {
  backward_positions(g, mask, dx, n, below, above);
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
const char* fake_quant_span_isa() {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return "avx512f";
  if (__builtin_cpu_supports("avx2")) return "avx2";
  return "default";
}
#else
const char* fake_quant_span_isa() { return "default"; }
#endif

}  // namespace edgeqat::detail
