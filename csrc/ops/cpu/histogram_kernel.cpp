// CPU kernel of observe_histogram_ (see ../histogram.cpp): one parallel read
// pass for the batch min / max (minmax_reduce.h), the new range on the host,
// then one parallel pass that counts x into private int64 histograms, one per
// chunk, summed at the end (integers: exact in any order).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <c10/util/irange.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "../fake_quant.h"
#include "../histogram.h"
#include "minmax_reduce.h"

namespace edgeqat::ops {
namespace {

constexpr int64_t kChunk = 1 << 16;    // elements per private histogram, at least
constexpr int64_t kMaxChunks = 64;     // private histograms, at most

template <typename scalar_t>
void count_into(const at::Tensor& x, const detail::histogram::Range& range,
                std::vector<int64_t>& counts) {
  const scalar_t* xp = x.const_data_ptr<scalar_t>();
  const int64_t n = x.numel();
  const int64_t bins = static_cast<int64_t>(counts.size());
  const double lo = range.lo;
  const double scale = detail::histogram::bin_scale(range, bins);
  const int64_t chunks = std::min(kMaxChunks, std::max<int64_t>(1, n / kChunk));
  const int64_t per_chunk = (n + chunks - 1) / chunks;
  std::vector<int64_t> partial(chunks * bins, 0);
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      int64_t* local = partial.data() + k * bins;
      const int64_t last = std::min(n, (k + 1) * per_chunk);
      for (int64_t i = k * per_chunk; i < last; ++i) {
        ++local[detail::histogram::bin_index(static_cast<double>(xp[i]), lo, scale, bins)];
      }
    }
  });
  for (const auto k : c10::irange(chunks)) {
    for (const auto b : c10::irange(bins)) {
      counts[b] += partial[k * bins + b];
    }
  }
}

void observe_histogram_cpu(at::Tensor& histogram, at::Tensor& hist_min, at::Tensor& hist_max,
                           const at::Tensor& x_in) {
  check_observe_histogram_args(histogram, hist_min, hist_max, x_in);
  if (x_in.numel() == 0) {
    return;
  }
  // Dense in any layout: the order of the values does not matter here.
  const at::Tensor x = dense(x_in);
  const cpu::MinMax batch = cpu::min_max(x, std::nullopt);
  HostHistogram h = plan_histogram_update(histogram, hist_min, hist_max, x, batch.lo[0],
                                          batch.hi[0], batch.has_nan);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), kObserveHistogramOp,
                                  [&] { count_into<scalar_t>(x, h.range, h.counts); });
  store_histogram(h, histogram, hist_min, hist_max);
}

}  // namespace

TORCH_LIBRARY_IMPL(edgeqat, CPU, m) {
  m.impl("observe_histogram_", observe_histogram_cpu);
}

}  // namespace edgeqat::ops
