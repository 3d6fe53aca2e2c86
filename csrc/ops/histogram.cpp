// Schemas, argument checks and C++ API of the histogram observer ops:
//
//   observe_histogram_(Tensor(a!) histogram, Tensor(b!) hist_min, Tensor(c!) hist_max,
//                      Tensor x) -> ()
//     Adds the values of x to the histogram, in place. histogram: 1-D int64
//     counts (exact far beyond float32's 2^24); [hist_min, hist_max]: the range
//     the bins cover, float32 or float64 0-dim (float64 keeps the bin edges
//     exact; modules start at +inf / -inf, "nothing observed"). The first batch
//     sets the range to its min / max; a batch outside it widens the range by a
//     power of two so that old bins merge whole (histogram_math.h). An empty x
//     changes nothing; NaN or infinite values are an error.
//
//   histogram_range(Tensor histogram, Tensor hist_min, Tensor hist_max, str method="mse",
//                   float percentile=99.99, int num_bits=8, bool narrow_range=False,
//                   bool symmetric=False) -> (Tensor min, Tensor max)
//     The quantization range chosen from the histogram: "percentile" keeps that
//     percentage of the values (of |x| when symmetric), "mse" minimises the
//     expected squared error of the fake quant with that range, clipping and
//     rounding, over candidate ends on the bin edges. Float32 0-dim tensors on
//     the histogram's device; the range contains 0 and is [-b, b] when
//     symmetric. Not differentiable.
#include "histogram.h"

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/util/irange.h>
#include <torch/library.h>

#include <cmath>
#include <limits>

#include "edgeqat/ops.h"

namespace edgeqat {
namespace ops {

void check_histogram_state(const char* op, const at::Tensor& histogram, const at::Tensor& hist_min,
                           const at::Tensor& hist_max) {
  TORCH_CHECK(histogram.scalar_type() == at::kLong, op,
              ": histogram must be an int64 tensor of counts, got dtype ",
              histogram.scalar_type());
  TORCH_CHECK(histogram.dim() == 1 && histogram.sym_size(0) >= 1, op,
              ": histogram must be 1-D with at least one bin, got shape ", histogram.sym_sizes());
  for (const auto& [name, t] : {std::pair<const char*, const at::Tensor&>{"hist_min", hist_min},
                                std::pair<const char*, const at::Tensor&>{"hist_max", hist_max}}) {
    TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, op, ": ", name,
                " must be a float32 or float64 tensor, got dtype ", t.scalar_type());
    TORCH_CHECK(t.dim() == 0, op, ": ", name, " must be a 0-dim tensor, got shape ",
                t.sym_sizes());
    TORCH_CHECK(t.device() == histogram.device(), op, ": ", name, " is on ", t.device(),
                " but histogram is on ", histogram.device());
  }
}

void check_observe_histogram_args(const at::Tensor& histogram, const at::Tensor& hist_min,
                                  const at::Tensor& hist_max, const at::Tensor& x) {
  const char* op = kObserveHistogramOp;
  TORCH_CHECK(at::isFloatingType(x.scalar_type()), op,
              ": x must be a floating-point tensor, got dtype ", x.scalar_type());
  check_histogram_state(op, histogram, hist_min, hist_max);
  TORCH_CHECK(histogram.device() == x.device(), op, ": histogram is on ", histogram.device(),
              " but x is on ", x.device());
}

HostHistogram read_histogram(const char* op, const at::Tensor& histogram,
                             const at::Tensor& hist_min, const at::Tensor& hist_max) {
  HostHistogram h;
  const at::Tensor counts = histogram.detach().to(at::kCPU).contiguous();
  h.counts.assign(counts.const_data_ptr<int64_t>(),
                  counts.const_data_ptr<int64_t>() + counts.numel());
  h.range = {hist_min.detach().to(at::kCPU).to(at::kDouble).item<double>(),
             hist_max.detach().to(at::kCPU).to(at::kDouble).item<double>()};
  int64_t total = 0;
  for (const auto i : c10::irange(h.counts.size())) {
    TORCH_CHECK(h.counts[i] >= 0, op, ": histogram[", i, "] = ", h.counts[i],
                " is negative; counts must be >= 0");
    total += h.counts[i];
  }
  if (std::isnan(h.range.lo) || std::isnan(h.range.hi)) {
    TORCH_CHECK(false, op, ": the histogram range [", h.range.lo, ", ", h.range.hi,
                "] is not a range (NaN)");
  }
  if (h.range.empty()) {
    TORCH_CHECK(total == 0, op, ": hist_min = ", h.range.lo, " > hist_max = ", h.range.hi,
                " marks an empty histogram, but it holds ", total, " count(s)");
  } else {
    TORCH_CHECK(std::isfinite(h.range.lo) && std::isfinite(h.range.hi), op,
                ": the histogram range [", h.range.lo, ", ", h.range.hi, "] must be finite");
  }
  return h;
}

HostHistogram plan_histogram_update(const at::Tensor& histogram, const at::Tensor& hist_min,
                                    const at::Tensor& hist_max, const at::Tensor& x,
                                    double batch_lo, double batch_hi, bool has_nan) {
  const char* op = kObserveHistogramOp;
  if (has_nan || !std::isfinite(batch_lo) || !std::isfinite(batch_hi)) {
    TORCH_CHECK(false, op, ": x contains ", at::isnan(x).sum().item<int64_t>(), " NaN and ",
                at::isinf(x).sum().item<int64_t>(),
                " infinite value(s); the histogram would be lost");
  }
  HostHistogram old = read_histogram(op, histogram, hist_min, hist_max);
  const int64_t bins = static_cast<int64_t>(old.counts.size());
  HostHistogram out;
  out.range = detail::histogram::grown_range(old.range, batch_lo, batch_hi, bins);
  TORCH_CHECK(std::isfinite(out.range.lo) && std::isfinite(out.range.hi), op,
              ": the histogram range [", old.range.lo, ", ", old.range.hi,
              "] cannot grow to cover the batch range [", batch_lo, ", ", batch_hi,
              "] without overflowing float64");
  if (out.range.lo == old.range.lo && out.range.hi == old.range.hi) {
    out.counts = std::move(old.counts);  // same bins: nothing to move
  } else {
    out.counts.assign(bins, 0);
    detail::histogram::rebin(old.counts, old.range, out.counts, out.range);
  }
  return out;
}

namespace {
// v rounded to the dtype of t, towards -inf (down) or +inf.
double round_outwards(double v, const at::Tensor& t, bool down) {
  if (t.scalar_type() == at::kDouble) {
    return v;
  }
  const float f = static_cast<float>(v);
  const double back = static_cast<double>(f);
  if (down && back > v) {
    return static_cast<double>(std::nextafter(f, -std::numeric_limits<float>::infinity()));
  }
  if (!down && back < v) {
    return static_cast<double>(std::nextafter(f, std::numeric_limits<float>::infinity()));
  }
  return back;
}
}  // namespace

void store_histogram(const HostHistogram& h, at::Tensor& histogram, at::Tensor& hist_min,
                     at::Tensor& hist_max) {
  const at::Tensor counts =
      at::from_blob(const_cast<int64_t*>(h.counts.data()),
                    {static_cast<int64_t>(h.counts.size())}, at::TensorOptions().dtype(at::kLong));
  histogram.copy_(counts);
  hist_min.fill_(round_outwards(h.range.lo, hist_min, /*down=*/true));
  hist_max.fill_(round_outwards(h.range.hi, hist_max, /*down=*/false));
}

}  // namespace ops

void observe_histogram_(at::Tensor& histogram, at::Tensor& hist_min, at::Tensor& hist_max,
                        const at::Tensor& x) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("edgeqat::observe_histogram_", "")
                             .typed<decltype(observe_histogram_)>();
  op.call(histogram, hist_min, hist_max, x);
}

std::tuple<at::Tensor, at::Tensor> histogram_range(const at::Tensor& histogram,
                                                   const at::Tensor& hist_min,
                                                   const at::Tensor& hist_max,
                                                   c10::string_view method, double percentile,
                                                   int64_t num_bits, bool narrow_range,
                                                   bool symmetric) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("edgeqat::histogram_range", "")
                             .typed<decltype(histogram_range)>();
  return op.call(histogram, hist_min, hist_max, method, percentile, num_bits, narrow_range,
                 symmetric);
}

TORCH_LIBRARY_FRAGMENT(edgeqat, m) {
  const std::vector<at::Tag> tags{at::Tag::pt2_compliant_tag};
  m.def(
      "observe_histogram_(Tensor(a!) histogram, Tensor(b!) hist_min, Tensor(c!) hist_max, "
      "Tensor x) -> ()",
      tags);
  m.def(
      "histogram_range(Tensor histogram, Tensor hist_min, Tensor hist_max, str method=\"mse\", "
      "float percentile=99.99, int num_bits=8, bool narrow_range=False, bool symmetric=False) "
      "-> (Tensor min, Tensor max)",
      tags);
}

}  // namespace edgeqat
