// The histogram observer's arithmetic; see histogram_math.h. Torch-free.
#include "histogram_math.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "fake_quant_math.h"

namespace edgeqat::detail::histogram {
namespace {

double cube(double v) { return v * v * v; }

int64_t total_count(const std::vector<int64_t>& counts) {
  return std::accumulate(counts.begin(), counts.end(), int64_t{0});
}

// [min(lo, 0), max(hi, 0)] in float32, or [-b, b] with b = max(|lo|, |hi|).
std::pair<float, float> containing_zero(double lo, double hi, bool symmetric) {
  if (symmetric) {
    const float b = static_cast<float>(std::max(std::abs(lo), std::abs(hi)));
    return {-b, b};
  }
  return {static_cast<float>(std::min(lo, 0.0)), static_cast<float>(std::max(hi, 0.0))};
}

// The non-empty bins as [a, b) with their counts: the sums below skip the
// (often many) empty bins of a heavy-tailed histogram.
struct Bin {
  double a, b, count;
};

std::vector<Bin> nonempty_bins(const std::vector<int64_t>& counts, const Range& r) {
  const int64_t bins = static_cast<int64_t>(counts.size());
  const double w = (r.hi - r.lo) / static_cast<double>(bins);
  std::vector<Bin> out;
  for (int64_t i = 0; i < bins; ++i) {
    if (counts[i] != 0) {
      const double a = r.lo + static_cast<double>(i) * w;
      const double b = i + 1 == bins ? r.hi : r.lo + static_cast<double>(i + 1) * w;
      out.push_back({a, b, static_cast<double>(counts[i])});
    }
  }
  return out;
}

// The grid of one candidate range, as the fake-quant kernel nudges it (in
// float32), widened to double for the error integrals.
struct Grid {
  bool degenerate;
  double lo, hi, scale;
};

Grid make_grid(float qlo, float qhi, int64_t num_bits, bool narrow_range) {
  const auto n = nudge<float>(qlo, qhi, quant_min(narrow_range), quant_max(num_bits));
  return {n.degenerate(), n.nudged_min, n.nudged_max, n.scale};
}

// The value x quantizes to (double arithmetic; for the point-mass case).
double quantized(double x, const Grid& g) {
  if (g.degenerate) {
    return 0.0;
  }
  const double c = std::min(std::max(x, g.lo), g.hi);
  return g.lo + std::floor((c - g.lo) / g.scale + 0.5) * g.scale;
}

// Integral over one grid step of the squared rounding error, in units of
// the step: with y the position in steps from the nudged minimum, rounding
// goes to n = floor(y + 1/2) and the error is r = y - n in [-1/2, 1/2).
// G(y) = integral_0^y (z - round(z))^2 dz = n / 12 + r^3 / 3: each whole step
// contributes 1/12, the partial one r^3/3 (from -1/2, or from 0 for n = 0:
// the first step starts at the grid point). Returned as (n, r^3 / 3) so that
// differences subtract the integers exactly.
std::pair<double, double> rounding_integral(double y) {
  const double n = std::floor(y + 0.5);
  const double r = y - n;
  return {n, cube(r) / 3.0};
}

// Sum over bins of count * mean squared error over the bin's uniform spread.
double bins_error(const std::vector<Bin>& bins, const Grid& g) {
  double total = 0.0;
  for (const Bin& bin : bins) {
    const double a = bin.a, b = bin.b;
    double e = 0.0;  // integral of (x - Q(x))^2 over [a, b]
    if (g.degenerate) {
      e = (cube(b) - cube(a)) / 3.0;  // everything becomes 0
    } else {
      if (a < g.lo) {  // clipped up to the nudged minimum
        const double u = std::min(b, g.lo);
        e += (cube(g.lo - a) - cube(g.lo - u)) / 3.0;
      }
      if (b > g.hi) {  // clipped down to the nudged maximum
        const double u = std::max(a, g.hi);
        e += (cube(b - g.hi) - cube(u - g.hi)) / 3.0;
      }
      const double u = std::max(a, g.lo), v = std::min(b, g.hi);
      if (u < v) {  // rounded to the grid
        const auto [nu, ru] = rounding_integral((u - g.lo) / g.scale);
        const auto [nv, rv] = rounding_integral((v - g.lo) / g.scale);
        e += cube(g.scale) * ((nv - nu) / 12.0 + (rv - ru));
      }
    }
    total += bin.count * e / (b - a);
  }
  return total;
}

// Quantile of the histogram with the counts spread uniformly inside each bin:
// the smallest value t with (count of values <= t) >= target, searched over
// the non-empty bins (target 0 gives the start of the first one, the total
// the end of the last one).
double quantile(const std::vector<int64_t>& counts, const Range& r, double target) {
  const int64_t bins = static_cast<int64_t>(counts.size());
  const double w = (r.hi - r.lo) / static_cast<double>(bins);
  double below = 0.0;
  for (int64_t i = 0; i < bins; ++i) {
    const double c = static_cast<double>(counts[i]);
    if (c == 0.0) {
      continue;
    }
    if (below + c >= target) {
      const double frac = std::max(0.0, target - below) / c;
      return r.lo + (static_cast<double>(i) + frac) * w;
    }
    below += c;
  }
  return r.hi;
}

}  // namespace

Range grown_range(const Range& current, double batch_lo, double batch_hi, int64_t bins) {
  if (current.empty()) {
    return {batch_lo, batch_hi};
  }
  if (batch_lo >= current.lo && batch_hi <= current.hi) {
    return current;
  }
  if (current.point()) {
    return {std::min(current.lo, batch_lo), std::max(current.hi, batch_hi)};
  }
  const double n = static_cast<double>(bins);
  const double w = (current.hi - current.lo) / n;
  const bool grew_lo = batch_lo < current.lo;
  const bool grew_hi = batch_hi > current.hi;
  // In old bins: how many the batch needs below the old start, and how far
  // above the old start it needs the range to reach.
  const double down = grew_lo ? std::ceil((current.lo - batch_lo) / w) : 0.0;
  const double up = grew_hi ? (batch_hi - current.lo) / w : n;
  Range out{current.lo, current.hi};
  for (double factor = 2.0; std::isfinite(factor * w); factor *= 2.0) {
    const double total = factor * n;
    const double m_max = std::floor(total - up);  // old bins below the old start, at most
    if (down <= m_max) {
      // The new start is m whole old bins below the old one; the room left
      // goes to the side the batch crossed (half each if both).
      const double m = grew_lo && !grew_hi   ? m_max
                       : grew_hi && !grew_lo ? down
                                             : down + std::floor((m_max - down) / 2.0);
      out.lo = current.lo - m * w;
      out.hi = out.lo + total * w;
      return {std::min(out.lo, batch_lo), std::max(out.hi, batch_hi)};
    }
  }
  const double inf = std::numeric_limits<double>::infinity();
  return {-inf, inf};
}

void rebin(const std::vector<int64_t>& old_counts, const Range& from,
           std::vector<int64_t>& counts, const Range& to) {
  const int64_t bins = static_cast<int64_t>(counts.size());
  const double scale = bin_scale(to, bins);
  if (from.empty()) {
    return;
  }
  if (from.point()) {
    counts[bin_index(from.lo, to.lo, scale, bins)] += total_count(old_counts);
    return;
  }
  const int64_t old_bins = static_cast<int64_t>(old_counts.size());
  const double w = (from.hi - from.lo) / static_cast<double>(old_bins);
  for (int64_t i = 0; i < old_bins; ++i) {
    if (old_counts[i] != 0) {
      const double centre = from.lo + (static_cast<double>(i) + 0.5) * w;
      counts[bin_index(centre, to.lo, scale, bins)] += old_counts[i];
    }
  }
}

std::pair<float, float> percentile_range(const std::vector<int64_t>& counts, const Range& r,
                                         double percentile, bool symmetric) {
  if (r.point()) {
    return containing_zero(r.lo, r.hi, symmetric);
  }
  const double total = static_cast<double>(total_count(counts));
  const double p = percentile / 100.0;
  if (!symmetric) {
    return containing_zero(quantile(counts, r, (1.0 - p) * total), quantile(counts, r, p * total),
                           false);
  }
  // The p-quantile of |x|: the smallest t with mass([-t, t]) >= p * total.
  // mass([-t, t]) = C(t) - C(-t) with C the piecewise-linear cumulative count,
  // continuous and non-decreasing in t: bisection to the last bit.
  const int64_t bins = static_cast<int64_t>(counts.size());
  const double w = (r.hi - r.lo) / static_cast<double>(bins);
  std::vector<double> before(bins + 1, 0.0);  // counts in bins < i
  for (int64_t i = 0; i < bins; ++i) {
    before[i + 1] = before[i] + static_cast<double>(counts[i]);
  }
  const auto cumulative = [&](double v) {
    if (v <= r.lo) {
      return 0.0;
    }
    if (v >= r.hi) {
      return total;
    }
    const double y = (v - r.lo) / w;
    const int64_t i = std::min<int64_t>(bins - 1, static_cast<int64_t>(y));
    const double frac = std::min(1.0, std::max(0.0, y - static_cast<double>(i)));
    return before[i] + frac * static_cast<double>(counts[i]);
  };
  const double target = p * total;
  double a = 0.0, b = std::max(std::abs(r.lo), std::abs(r.hi));
  for (int iter = 0; iter < 200; ++iter) {
    const double mid = a + (b - a) / 2.0;
    if (!(mid > a && mid < b)) {
      break;  // adjacent doubles
    }
    if (cumulative(mid) - cumulative(-mid) >= target) {
      b = mid;
    } else {
      a = mid;
    }
  }
  return containing_zero(-b, b, true);
}

double expected_squared_error(const std::vector<int64_t>& counts, const Range& r, float qlo,
                              float qhi, int64_t num_bits, bool narrow_range) {
  const double total = static_cast<double>(total_count(counts));
  if (total == 0.0) {
    return 0.0;
  }
  const Grid g = make_grid(qlo, qhi, num_bits, narrow_range);
  if (r.point()) {
    const double d = r.lo - quantized(r.lo, g);
    return d * d;
  }
  return bins_error(nonempty_bins(counts, r), g) / total;
}

std::pair<float, float> mse_range(const std::vector<int64_t>& counts, const Range& r,
                                  int64_t num_bits, bool narrow_range, bool symmetric) {
  if (r.point()) {
    return containing_zero(r.lo, r.hi, symmetric);  // error 0: the value is a nudged end
  }
  const std::vector<Bin> bins = nonempty_bins(counts, r);
  const auto error = [&](float lo, float hi) {
    return bins_error(bins, make_grid(lo, hi, num_bits, narrow_range));
  };
  const int64_t n = static_cast<int64_t>(counts.size());
  if (symmetric) {
    const double a = std::max(std::abs(r.lo), std::abs(r.hi));
    float best = static_cast<float>(a);
    double best_error = error(-best, best);
    for (int64_t j = n - 1; j >= 1; --j) {  // widest first: ties keep the wider
      const float b = static_cast<float>(a * static_cast<double>(j) / static_cast<double>(n));
      const double e = error(-b, b);
      if (e < best_error) {
        best_error = e;
        best = b;
      }
    }
    return {-best, best};
  }
  // Candidate ends: the bin edges on each side of 0, outermost first, then 0.
  const double w = (r.hi - r.lo) / static_cast<double>(n);
  std::vector<float> los, his;
  for (int64_t i = 0; i <= n; ++i) {
    const double edge = i == n ? r.hi : r.lo + static_cast<double>(i) * w;
    if (edge < 0.0) {
      los.push_back(static_cast<float>(edge));
    }
  }
  for (int64_t i = n; i >= 0; --i) {
    const double edge = i == n ? r.hi : r.lo + static_cast<double>(i) * w;
    if (edge > 0.0) {
      his.push_back(static_cast<float>(edge));
    }
  }
  los.push_back(0.0f);
  his.push_back(0.0f);
  float lo = los.front(), hi = his.front();
  double best_error = error(lo, hi);
  for (int pass = 0; pass < 64; ++pass) {  // converges in a few passes
    bool moved = false;
    for (const float h : his) {
      const double e = error(lo, h);
      if (e < best_error) {
        best_error = e, hi = h, moved = true;
      }
    }
    for (const float l : los) {
      const double e = error(l, hi);
      if (e < best_error) {
        best_error = e, lo = l, moved = true;
      }
    }
    if (!moved) {
      break;
    }
  }
  return {lo, hi};
}

}  // namespace edgeqat::detail::histogram
