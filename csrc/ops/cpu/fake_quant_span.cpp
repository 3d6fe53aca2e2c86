// Vectorized span loops; see fake_quant_span.h. Each public function is
// compiled for several instruction sets (function multiversioning) and the
// best one for the running CPU is picked at load time, so one binary is
// portable and still uses AVX2/AVX-512 where present. The x86-64-v4 level
// (AVX-512 F/BW/DQ/VL) matters: the loops mix float lanes with byte masks,
// and plain "avx512f" has no byte instructions. SSE4.1 (in every level but
// "default") is what turns std::floor into one instruction.
#include "fake_quant_span.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define EDGEQAT_MULTIVERSION \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#elif defined(__x86_64__) && defined(__clang__)
#define EDGEQAT_MULTIVERSION __attribute__((target_clones("avx512bw", "avx2", "default")))
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

// The backward runs over blocks that fit in L1: one elementwise pass selects
// dx and the below/above parts into float scratch, a second widens the
// scratch to double. Fusing both into one loop makes the compiler pick
// byte-sized lanes and spill (measured 3.4x slower at 1M elements).
constexpr int64_t kBlock = 512;

template <typename T>
EDGEQAT_ALWAYS_INLINE void select_block(const T* __restrict g, const uint8_t* __restrict mask,
                                        T* __restrict dx, T* __restrict below,
                                        T* __restrict above, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const T gi = g[i];
    const uint8_t m = mask[i];
    dx[i] = m == kInside ? gi : T(0);
    below[i] = m == kBelow ? gi : T(0);
    above[i] = m == kAbove ? gi : T(0);
  }
}

template <typename T>
EDGEQAT_ALWAYS_INLINE double sum_in_double(const T* __restrict v, int64_t n) {
  double sum = 0.0;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < n; ++i) {
    sum += static_cast<double>(v[i]);
  }
  return sum;
}

template <typename T>
EDGEQAT_ALWAYS_INLINE void backward_sums(const T* __restrict g, const uint8_t* __restrict mask,
                                         T* __restrict dx, int64_t n, double* below_out,
                                         double* above_out) {
  alignas(64) T below[kBlock], above[kBlock];
  double below_sum = 0.0, above_sum = 0.0;
  for (int64_t b = 0; b < n; b += kBlock) {
    const int64_t len = n - b < kBlock ? n - b : kBlock;
    select_block(g + b, mask + b, dx + b, below, above, len);
    below_sum += sum_in_double(below, len);
    above_sum += sum_in_double(above, len);
  }
  *below_out = below_sum;
  *above_out = above_sum;
}

template <typename T>
EDGEQAT_ALWAYS_INLINE void backward_positions(const T* __restrict g,
                                              const uint8_t* __restrict mask, T* __restrict dx,
                                              int64_t n, double* __restrict below_acc,
                                              double* __restrict above_acc) {
  alignas(64) T below[kBlock], above[kBlock];
  for (int64_t b = 0; b < n; b += kBlock) {
    const int64_t len = n - b < kBlock ? n - b : kBlock;
    select_block(g + b, mask + b, dx + b, below, above, len);
#pragma omp simd
    for (int64_t i = 0; i < len; ++i) {
      below_acc[b + i] += static_cast<double>(below[i]);
      above_acc[b + i] += static_cast<double>(above[i]);
    }
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
#if defined(__clang__)
  if (__builtin_cpu_supports("avx512bw")) return "avx512bw";
  if (__builtin_cpu_supports("avx2")) return "avx2";
#else
  if (__builtin_cpu_supports("x86-64-v4")) return "x86-64-v4";
  if (__builtin_cpu_supports("x86-64-v3")) return "x86-64-v3";
#endif
  return "default";
}
#else
const char* fake_quant_span_isa() { return "default"; }
#endif

}  // namespace edgeqat::detail
