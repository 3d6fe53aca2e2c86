// The arithmetic of the histogram observer, free of torch: the layout of the
// bins, how the covered range grows, and the range selection (percentile and
// expected-MSE) from a histogram. The ops in histogram.cpp keep the state in
// tensors and call these on host copies of it (bins are few; the data pass
// that fills them is in the kernels).
//
// Layout. `bins` equal bins over [lo, hi]: bin i covers
// [lo + i * w, lo + (i + 1) * w) with w = (hi - lo) / bins, the last bin also
// takes hi. A value v goes to bin floor((v - lo) * (bins / (hi - lo)))
// clamped to [0, bins - 1] (double arithmetic, this exact formula, so that
// a reference can reproduce every count). lo > hi is the empty histogram;
// lo == hi is a point mass: every count is in bin 0 and stands for the value
// lo.
//
// Growth. A batch outside [lo, hi] widens the range by a power of two,
// 2^k * bins * w, with the old range placed on a whole number m of old bins
// from the new start. Every new bin is then the union of exactly 2^k old
// bins, so the old counts merge without being split or redistributed: each
// count stays exact, only the resolution halves per doubling. The extra room
// goes to the side(s) the batch crossed. (PyTorch's HistogramObserver instead
// spreads old bins proportionally over the new ones, which splits counts.)
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

namespace edgeqat::detail::histogram {

struct Range {
  double lo, hi;
  bool empty() const { return lo > hi; }
  bool point() const { return lo == hi; }
};

// Bin of v in `bins` bins over r (see the layout above); 0 for a point range.
inline int64_t bin_index(double v, double lo, double scale, int64_t bins) {
  const double t = (v - lo) * scale;
  return t < 0.0 ? 0 : (t >= static_cast<double>(bins) ? bins - 1 : static_cast<int64_t>(t));
}

// bins / (hi - lo), or 0 for a point (every value then lands in bin 0).
inline double bin_scale(const Range& r, int64_t bins) {
  return r.hi > r.lo ? static_cast<double>(bins) / (r.hi - r.lo) : 0.0;
}

// The range that covers `current` and the batch [batch_lo, batch_hi] (finite,
// batch_lo <= batch_hi): the batch range itself for an empty histogram,
// `current` when the batch fits, the two ends for a point mass, otherwise
// the power-of-two growth described above. The result is never narrower than
// the batch, even where rounding would leave an end an ulp short. May be
// infinite when the values are near the largest double (the caller checks).
Range grown_range(const Range& current, double batch_lo, double batch_hi, int64_t bins);

// Counts of `old_counts` (over `from`) moved into `counts` (over `to`, which
// covers `from`), added to what `counts` holds. Each old bin goes whole to
// the new bin of its centre, which for a power-of-two growth is the bin that
// contains it; a point mass goes to the bin of its value.
void rebin(const std::vector<int64_t>& old_counts, const Range& from,
           std::vector<int64_t>& counts, const Range& to);

// ---------------------------------------------------------------------------
// Range selection. Both methods model the values inside a bin as uniformly
// spread over it (a point mass as the single value), and return a float32
// range that contains 0: [-b, b] when symmetric.

// Percentile: the range holds `percentile` percent of the values. Asymmetric:
// [q(1 - p), q(p)] with q the quantile of the histogram, linear inside a
// bin; symmetric: [-t, t] with t the p-quantile of |x|. 50 <= percentile <= 100;
// 100 gives the ends of the outermost non-empty bins.
std::pair<float, float> percentile_range(const std::vector<int64_t>& counts, const Range& r,
                                         double percentile, bool symmetric);

// Expected mean squared error of fake-quantizing the histogram's values with
// the range [qlo, qhi] (float32, qlo <= 0 <= qhi): the range is nudged exactly
// as fake_quant_with_min_max_vars nudges it, values outside are clamped to
// the nudged ends (clipping error), values inside round to the nearest grid
// point (rounding error), each integrated exactly over the uniform spread of
// every bin. A degenerate range quantizes everything to 0.
double expected_squared_error(const std::vector<int64_t>& counts, const Range& r, float qlo,
                              float qhi, int64_t num_bits, bool narrow_range);

// MSE: the range with the smallest expected_squared_error among candidate
// ends on the histogram's bin edges (and 0).
//  - symmetric: b = A * j / bins for j = 1 .. bins with A = max(|lo|, |hi|),
//    every candidate evaluated;
//  - asymmetric: coordinate descent from the min / max range: alternately the
//    best max for the current min (every edge above 0) and the best min for
//    the current max (every edge below 0), until neither moves. Each step can
//    only lower the error, so the result is never worse than min / max.
// Ties keep the wider range. Cost: O(bins^2) per pass.
std::pair<float, float> mse_range(const std::vector<int64_t>& counts, const Range& r,
                                  int64_t num_bits, bool narrow_range, bool symmetric);

}  // namespace edgeqat::detail::histogram
