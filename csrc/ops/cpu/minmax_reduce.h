// One parallel read pass for the min and max of a dense CPU tensor, per
// tensor or per slice along an axis, with NaN detection. Shared by the CPU
// kernels of observe_fake_quant_ and observe_histogram_.
//
// Min and max are exact whatever the order of evaluation, so the results do
// not depend on the number of threads. NaN is not a min or a max: it is
// counted apart (comparisons with NaN are false), and the caller rejects the
// batch. Values are returned as double, which holds every float32, float16,
// bfloat16 and float64 value exactly.
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <c10/util/irange.h>

#include "tensor_layout.h"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <numeric>
#include <optional>
#include <type_traits>
#include <vector>

namespace edgeqat::ops::cpu {

struct MinMax {
  std::vector<double> lo, hi;  // one entry per tensor, or per channel
  bool has_nan = false;
};

namespace minmax_detail {

constexpr int64_t kPiece = 32768;       // elements reduced by one task, at most
constexpr int64_t kMinRun = 64;         // shorter runs of one channel: "positions"
constexpr int64_t kMaxPositions = 1 << 16;

using cpu::Layout;
using cpu::memory_layout;

// float for float / half / bfloat16 (exact), double for double.
template <typename scalar_t>
using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;

// Min, max and "any NaN" of n contiguous values. The ternaries (not
// std::min) skip NaN and vectorize.
template <typename scalar_t>
inline void reduce_span(const scalar_t* x, int64_t n, acc_t<scalar_t>& lo_out,
                        acc_t<scalar_t>& hi_out, bool& nan_out) {
  using T = acc_t<scalar_t>;
  T lo = std::numeric_limits<T>::infinity();
  T hi = -std::numeric_limits<T>::infinity();
  int nan = 0;
#pragma omp simd reduction(min : lo) reduction(max : hi) reduction(| : nan)
  for (int64_t i = 0; i < n; ++i) {
    const T v = static_cast<T>(x[i]);
    lo = v < lo ? v : lo;
    hi = v > hi ? v : hi;
    nan |= static_cast<int>(v != v);
  }
  lo_out = std::min(lo_out, lo);
  hi_out = std::max(hi_out, hi);
  nan_out = nan_out || nan != 0;
}

template <typename scalar_t>
MinMax reduce(const at::Tensor& x, const Layout& layout) {
  using T = acc_t<scalar_t>;
  constexpr T kInf = std::numeric_limits<T>::infinity();
  const scalar_t* xp = x.const_data_ptr<scalar_t>();
  const int64_t channels = layout.channels, inner = layout.inner;
  const int64_t row = channels * inner;
  MinMax out;
  out.lo.assign(channels, std::numeric_limits<double>::infinity());
  out.hi.assign(channels, -std::numeric_limits<double>::infinity());
  if (layout.outer * row == 0) {
    return out;
  }
  if (channels > 1 && inner < kMinRun && row <= kMaxPositions) {
    // The channel changes every few elements (channels-last, last axis):
    // chunks of whole rows, each with per-position partial results.
    const int64_t rows_per_chunk = std::max<int64_t>(1, kPiece / row);
    const int64_t chunks = (layout.outer + rows_per_chunk - 1) / rows_per_chunk;
    const int64_t kept = std::min<int64_t>(chunks, 64);  // partial arrays in memory
    std::vector<T> lo(kept * row, kInf), hi(kept * row, -kInf);
    std::vector<char> nan(kept, 0);
    at::parallel_for(0, kept, 1, [&](int64_t begin, int64_t end) {
      for (int64_t k = begin; k < end; ++k) {
        T* plo = lo.data() + k * row;
        T* phi = hi.data() + k * row;
        bool any_nan = false;
        // Chunks k, k + kept, k + 2 kept, ... fold into partial k.
        for (int64_t c = k; c < chunks; c += kept) {
          const int64_t last = std::min(layout.outer, (c + 1) * rows_per_chunk);
          for (int64_t o = c * rows_per_chunk; o < last; ++o) {
            const scalar_t* xr = xp + o * row;
            int nan_row = 0;
#pragma omp simd reduction(| : nan_row)
            for (int64_t p = 0; p < row; ++p) {
              const T v = static_cast<T>(xr[p]);
              plo[p] = v < plo[p] ? v : plo[p];
              phi[p] = v > phi[p] ? v : phi[p];
              nan_row |= static_cast<int>(v != v);
            }
            any_nan = any_nan || nan_row != 0;
          }
        }
        nan[k] = any_nan;
      }
    });
    for (const auto k : c10::irange(kept)) {
      out.has_nan = out.has_nan || nan[k];
      for (const auto p : c10::irange(row)) {
        const int64_t ch = p / inner;
        out.lo[ch] = std::min(out.lo[ch], static_cast<double>(lo[k * row + p]));
        out.hi[ch] = std::max(out.hi[ch], static_cast<double>(hi[k * row + p]));
      }
    }
    return out;
  }
  // Runs of `inner` elements with one channel, each cut into pieces.
  const int64_t piece = std::min(inner, kPiece);
  const int64_t pieces_per_run = (inner + piece - 1) / piece;
  const int64_t pieces = layout.outer * channels * pieces_per_run;
  std::vector<T> lo(pieces, kInf), hi(pieces, -kInf);
  std::vector<char> nan(pieces, 0);
  const int64_t grain = std::max<int64_t>(1, kPiece / piece);
  at::parallel_for(0, pieces, grain, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      const int64_t run = k / pieces_per_run;
      const int64_t start = (k % pieces_per_run) * piece;
      bool any_nan = false;
      reduce_span(xp + run * inner + start, std::min(piece, inner - start), lo[k], hi[k],
                  any_nan);
      nan[k] = any_nan;
    }
  });
  for (const auto k : c10::irange(pieces)) {
    const int64_t ch = (k / pieces_per_run) % channels;
    out.has_nan = out.has_nan || nan[k];
    out.lo[ch] = std::min(out.lo[ch], static_cast<double>(lo[k]));
    out.hi[ch] = std::max(out.hi[ch], static_cast<double>(hi[k]));
  }
  return out;
}

}  // namespace minmax_detail

// Min and max of a dense (non-overlapping and dense) floating CPU tensor x,
// per tensor (axis empty) or per slice along the normalised axis.
inline MinMax min_max(const at::Tensor& x, std::optional<int64_t> axis) {
  const auto layout = minmax_detail::memory_layout(x, axis);
  MinMax out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "edgeqat::min_max",
                                  [&] { out = minmax_detail::reduce<scalar_t>(x, layout); });
  return out;
}

}  // namespace edgeqat::ops::cpu
