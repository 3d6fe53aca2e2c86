// Fused CPU kernels of the fake-quant ops.
//
// Every tensor is walked in memory order (any dense layout: contiguous,
// channels-last, permuted; anything else is made contiguous first) and split
// around the channel axis into [outer, channels, inner]. Two shapes of loop:
//  - "runs": the channel is constant over `inner` consecutive elements, one
//    range per run (per tensor, or per channel with a slow-moving axis);
//  - "positions": the channel changes every few elements (channels-last,
//    last-axis per channel); each row of channels * inner elements is walked
//    with one range per position, from small arrays.
// The range gradients are reduced in double over pieces whose boundaries
// depend only on the shape, then summed in a fixed order: results do not
// depend on the number of threads.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/empty_strided.h>
#include <ATen/ops/from_blob.h>
#include <c10/util/irange.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <vector>


#include "../fake_quant.h"
#include "fake_quant_span.h"
#include "tensor_layout.h"

namespace edgeqat::ops {
namespace {

using cpu::Layout;
using cpu::memory_layout;
using cpu::prefer_huge_pages;

using detail::KernelRange;
using detail::KernelRangeArrays;

constexpr int64_t kGrain = 32768;          // elements per parallel task, at least
constexpr int64_t kPiece = 16384;          // elements per partial sum in the backward
constexpr int64_t kMaxPositions = 4096;    // longest row handled as "positions"
constexpr int64_t kMinRun = 64;            // shorter runs use "positions"
constexpr int64_t kMaxPositionChunks = 64; // partial-sum rows in "positions" backward
constexpr int64_t kConvertBlock = 512;     // half/bfloat16 staging buffer, elements

// Per channel with fast-moving channels and a row short enough for arrays.
bool use_positions(const Layout& layout) {
  return layout.channels > 1 && layout.inner < kMinRun &&
         layout.channels * layout.inner <= kMaxPositions;
}




template <typename T>
std::vector<KernelRange<T>> kernel_ranges(const char* op, const at::Tensor& min,
                                          const at::Tensor& max, int64_t num_bits,
                                          bool narrow_range) {
  const auto [min_host, max_host] =
      checked_host_ranges(op, min, max, std::is_same_v<T, double> ? at::kDouble : at::kFloat);
  const double* lo = min_host.template const_data_ptr<double>();
  const double* hi = max_host.template const_data_ptr<double>();
  const int64_t qmin = detail::quant_min(narrow_range);
  const int64_t qmax = detail::quant_max(num_bits);
  std::vector<KernelRange<T>> ranges(min_host.numel());
  for (const auto c : c10::irange(min_host.numel())) {
    // Already rounded to the compute type: float32 nudging for float32 inputs.
    ranges[c] = KernelRange<T>::from(
        detail::nudge(static_cast<T>(lo[c]), static_cast<T>(hi[c]), qmin, qmax));
  }
  return ranges;
}

// Range arrays for the "positions" loop: position p = c * inner + k.
template <typename T>
struct PositionRanges {
  std::vector<T> lo, hi, scale, zero_index;

  PositionRanges(const std::vector<KernelRange<T>>& ranges, const Layout& layout) {
    const int64_t n = layout.channels * layout.inner;
    lo.resize(n), hi.resize(n), scale.resize(n), zero_index.resize(n);
    for (const auto p : c10::irange(n)) {
      const auto& r = ranges[p / layout.inner];
      lo[p] = r.lo, hi[p] = r.hi, scale[p] = r.scale, zero_index[p] = r.zero_index;
    }
  }
  KernelRangeArrays<T> at(int64_t p) const {
    return {lo.data() + p, hi.data() + p, scale.data() + p, zero_index.data() + p};
  }
};

// Span calls for the stored dtype: float and double go straight to the
// vectorized loops, half and bfloat16 through a float staging buffer.
template <typename scalar_t, typename T, typename RangeArg>
void forward_span(const scalar_t* x, scalar_t* y, uint8_t* mask, int64_t n,
                  const RangeArg& range) {
  if constexpr (std::is_same_v<scalar_t, T>) {
    detail::fake_quant_span(x, y, mask, n, range);
  } else {
    float xb[kConvertBlock], yb[kConvertBlock];
    for (int64_t b = 0; b < n; b += kConvertBlock) {
      const int64_t len = std::min(kConvertBlock, n - b);
      for (const auto i : c10::irange(len)) xb[i] = static_cast<float>(x[b + i]);
      if constexpr (std::is_same_v<RangeArg, KernelRangeArrays<T>>) {
        const KernelRangeArrays<T> shifted{range.lo + b, range.hi + b, range.scale + b,
                                           range.zero_index + b};
        detail::fake_quant_span(xb, yb, mask ? mask + b : nullptr, len, shifted);
      } else {
        detail::fake_quant_span(xb, yb, mask ? mask + b : nullptr, len, range);
      }
      for (const auto i : c10::irange(len)) y[b + i] = static_cast<scalar_t>(yb[i]);
    }
  }
}

template <typename scalar_t, typename T>
void forward_kernel(const at::Tensor& x, at::Tensor& y, uint8_t* mask, const Layout& layout,
                    const std::vector<KernelRange<T>>& ranges) {
  const scalar_t* xp = x.const_data_ptr<scalar_t>();
  scalar_t* yp = y.mutable_data_ptr<scalar_t>();
  const int64_t numel = layout.numel();
  if (use_positions(layout)) {
    const PositionRanges<T> positions(ranges, layout);
    const int64_t row = layout.channels * layout.inner;
    at::parallel_for(0, numel, kGrain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end;) {
        const int64_t p = i % row;
        const int64_t len = std::min(end - i, row - p);
        forward_span<scalar_t, T>(xp + i, yp + i, mask ? mask + i : nullptr, len,
                                  positions.at(p));
        i += len;
      }
    });
    return;
  }
  const int64_t inner = layout.inner;
  at::parallel_for(0, numel, kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end;) {
      const int64_t run = i / inner;
      const int64_t len = std::min(end, (run + 1) * inner) - i;
      forward_span<scalar_t, T>(xp + i, yp + i, mask ? mask + i : nullptr, len,
                                ranges[run % layout.channels]);
      i += len;
    }
  });
}

template <typename scalar_t>
void grad_span(const scalar_t* g, const uint8_t* mask, scalar_t* dx, int64_t n, double* below,
               double* above, bool positions) {
  if constexpr (std::is_same_v<scalar_t, float> || std::is_same_v<scalar_t, double>) {
    if (positions) {
      detail::fake_quant_grad_span_positions(g, mask, dx, n, below, above);
    } else {
      detail::fake_quant_grad_span(g, mask, dx, n, below, above);
    }
  } else {
    float gb[kConvertBlock], db[kConvertBlock];
    double below_sum = 0.0, above_sum = 0.0;
    for (int64_t b = 0; b < n; b += kConvertBlock) {
      const int64_t len = std::min(kConvertBlock, n - b);
      for (const auto i : c10::irange(len)) gb[i] = static_cast<float>(g[b + i]);
      if (positions) {
        detail::fake_quant_grad_span_positions(gb, mask + b, db, len, below + b, above + b);
      } else {
        double bs = 0.0, as = 0.0;
        detail::fake_quant_grad_span(gb, mask + b, db, len, &bs, &as);
        below_sum += bs, above_sum += as;
      }
      for (const auto i : c10::irange(len)) dx[b + i] = static_cast<scalar_t>(db[i]);
    }
    if (!positions) {
      *below = below_sum, *above = above_sum;
    }
  }
}

// Fills dx and returns per-channel sums (double) below and above the range.
template <typename scalar_t>
void backward_kernel(const at::Tensor& grad, const at::Tensor& mask, at::Tensor& dx,
                     const Layout& layout, std::vector<double>& below,
                     std::vector<double>& above) {
  const scalar_t* gp = grad.const_data_ptr<scalar_t>();
  const uint8_t* mp = mask.const_data_ptr<uint8_t>();
  scalar_t* dp = dx.mutable_data_ptr<scalar_t>();
  const int64_t numel = layout.numel();
  below.assign(layout.channels, 0.0);
  above.assign(layout.channels, 0.0);
  if (numel == 0) {
    return;
  }
  if (use_positions(layout)) {
    // Chunks of whole rows, each with its own per-position partial sums.
    const int64_t row = layout.channels * layout.inner;
    const int64_t chunks =
        std::min({kMaxPositionChunks, layout.outer, (numel + kPiece - 1) / kPiece});
    const int64_t rows_per_chunk = (layout.outer + chunks - 1) / chunks;
    std::vector<double> part_below(chunks * row, 0.0), part_above(chunks * row, 0.0);
    at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
      for (int64_t k = begin; k < end; ++k) {
        const int64_t last = std::min(layout.outer, (k + 1) * rows_per_chunk);
        for (int64_t o = k * rows_per_chunk; o < last; ++o) {
          const int64_t off = o * row;
          grad_span(gp + off, mp + off, dp + off, row, part_below.data() + k * row,
                    part_above.data() + k * row, /*positions=*/true);
        }
      }
    });
    for (const auto k : c10::irange(chunks)) {
      for (const auto p : c10::irange(row)) {
        below[p / layout.inner] += part_below[k * row + p];
        above[p / layout.inner] += part_above[k * row + p];
      }
    }
    return;
  }
  // Runs of `inner` elements, each cut into pieces of at most kPiece.
  const int64_t inner = layout.inner;
  const int64_t piece = std::min(inner, kPiece);
  const int64_t pieces_per_run = (inner + piece - 1) / piece;
  const int64_t pieces = layout.outer * layout.channels * pieces_per_run;
  std::vector<double> piece_below(pieces), piece_above(pieces);
  const int64_t grain = std::max<int64_t>(1, kGrain / piece);
  at::parallel_for(0, pieces, grain, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      const int64_t run = k / pieces_per_run;
      const int64_t start = (k % pieces_per_run) * piece;
      const int64_t len = std::min(piece, inner - start);
      const int64_t off = run * inner + start;
      grad_span(gp + off, mp + off, dp + off, len, &piece_below[k], &piece_above[k],
                /*positions=*/false);
    }
  });
  for (const auto k : c10::irange(pieces)) {
    const int64_t channel = (k / pieces_per_run) % layout.channels;
    below[channel] += piece_below[k];
    above[channel] += piece_above[k];
  }
}

std::tuple<at::Tensor, at::Tensor> forward_cpu(const at::Tensor& x_in, const at::Tensor& min,
                                               const at::Tensor& max,
                                               std::optional<int64_t> axis_in,
                                               int64_t num_bits, bool narrow_range,
                                               bool with_mask) {
  const char* op = public_op_name(axis_in);
  const auto axis = check_fake_quant_args(op, x_in, min, max, axis_in, num_bits);
  const at::Tensor x = dense(x_in);
  at::Tensor y = at::empty_like(x);
  at::Tensor mask = with_mask ? at::empty_like(x, x.options().dtype(at::kByte)) : at::Tensor();
  prefer_huge_pages(y);
  if (with_mask) {
    prefer_huge_pages(mask);
  }
  const Layout layout = memory_layout(x, axis);
  uint8_t* mask_ptr = with_mask ? mask.mutable_data_ptr<uint8_t>() : nullptr;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "edgeqat::fake_quant", [&] {
    using T = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    const auto ranges = kernel_ranges<T>(op, min, max, num_bits, narrow_range);
    forward_kernel<scalar_t, T>(x, y, mask_ptr, layout, ranges);
  });
  return {y, mask};
}

at::Tensor fake_quant_cpu(const at::Tensor& x, const at::Tensor& min, const at::Tensor& max,
                          int64_t num_bits, bool narrow_range) {
  return std::get<0>(forward_cpu(x, min, max, std::nullopt, num_bits, narrow_range, false));
}

at::Tensor fake_quant_per_channel_cpu(const at::Tensor& x, const at::Tensor& min,
                                      const at::Tensor& max, int64_t axis, int64_t num_bits,
                                      bool narrow_range) {
  return std::get<0>(forward_cpu(x, min, max, axis, num_bits, narrow_range, false));
}

std::tuple<at::Tensor, at::Tensor> fake_quant_cachemask_cpu(
    const at::Tensor& x, const at::Tensor& min, const at::Tensor& max,
    std::optional<int64_t> axis, int64_t num_bits, bool narrow_range) {
  return forward_cpu(x, min, max, axis, num_bits, narrow_range, true);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> fake_quant_backward_cpu(
    const at::Tensor& grad_in, const at::Tensor& mask_in, std::optional<int64_t> axis_in,
    at::ScalarType min_dtype, at::ScalarType max_dtype) {
  const auto axis = check_backward_args(grad_in, mask_in, axis_in, min_dtype, max_dtype);
  const at::Tensor mask = dense(mask_in);
  // Walk grad in the mask's memory order: copy it into the mask's strides
  // only if its layout differs (autograd usually hands it over matching).
  at::Tensor grad = grad_in;
  if (grad.strides() != mask.strides()) {
    grad = at::empty_strided(mask.sizes(), mask.strides(), grad_in.options());
    grad.copy_(grad_in);
  }
  at::Tensor dx = at::empty_strided(mask.sizes(), mask.strides(), grad.options());
  prefer_huge_pages(dx);
  const Layout layout = memory_layout(mask, axis);
  std::vector<double> below, above;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(),
                                  "edgeqat::_fake_quant_backward", [&] {
                                    backward_kernel<scalar_t>(grad, mask, dx, layout, below,
                                                              above);
                                  });
  at::Tensor grad_min = empty_range_grad(mask, axis, min_dtype);
  at::Tensor grad_max = empty_range_grad(mask, axis, max_dtype);
  const auto sums = at::TensorOptions().dtype(at::kDouble);
  const std::vector<int64_t> shape = axis ? std::vector<int64_t>{layout.channels}
                                          : std::vector<int64_t>{};
  grad_min.copy_(at::from_blob(below.data(), shape, sums));
  grad_max.copy_(at::from_blob(above.data(), shape, sums));
  return {dx, grad_min, grad_max};
}

}  // namespace

TORCH_LIBRARY_IMPL(edgeqat, CPU, m) {
  m.impl("fake_quant_with_min_max_vars", fake_quant_cpu);
  m.impl("fake_quant_with_min_max_vars_per_channel", fake_quant_per_channel_cpu);
  m.impl("_fake_quant_cachemask", fake_quant_cachemask_cpu);
  m.impl("_fake_quant_backward", fake_quant_backward_cpu);
}

}  // namespace edgeqat::ops
