// The histogram observer ops composed of ATen ops and host arithmetic, for
// every device and Meta (see ../histogram.cpp):
//  - observe_histogram_ on devices without a fused kernel: the batch range and
//    the bin of every value on the device (the same double formula as the CPU
//    kernel, so the counts agree), the counts and the range on the host;
//  - histogram_range everywhere: the selection reads the bins on the host
//    (a copy of `bins` integers) and returns float32 0-dim tensors on the
//    histogram's device.
// On Meta both check their arguments and touch no data.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <string>

#include "../histogram.h"

namespace edgeqat::ops {
namespace {

void observe_histogram_composite(at::Tensor& histogram, at::Tensor& hist_min,
                                 at::Tensor& hist_max, const at::Tensor& x_in) {
  check_observe_histogram_args(histogram, hist_min, hist_max, x_in);
  if (x_in.is_meta() || x_in.sym_numel() == 0) {
    return;
  }
  const at::Tensor x = x_in.detach();
  const auto [batch_min, batch_max] = at::aminmax(x);  // NaN propagates into both
  const double lo = batch_min.to(at::kDouble).item<double>();
  const double hi = batch_max.to(at::kDouble).item<double>();
  HostHistogram h = plan_histogram_update(histogram, hist_min, hist_max, x, lo, hi,
                                          std::isnan(lo) || std::isnan(hi));
  const int64_t bins = static_cast<int64_t>(h.counts.size());
  const double scale = detail::histogram::bin_scale(h.range, bins);
  const at::Tensor index = ((x.to(at::kDouble) - h.range.lo) * scale)
                               .floor_()
                               .clamp_(0, static_cast<double>(bins - 1))
                               .to(at::kLong)
                               .reshape({-1});
  const at::Tensor batch_counts = at::bincount(index, {}, bins).to(at::kCPU).contiguous();
  const int64_t* c = batch_counts.const_data_ptr<int64_t>();
  for (int64_t b = 0; b < bins; ++b) {
    h.counts[b] += c[b];
  }
  store_histogram(h, histogram, hist_min, hist_max);
}

std::tuple<at::Tensor, at::Tensor> histogram_range_composite(
    const at::Tensor& histogram, const at::Tensor& hist_min, const at::Tensor& hist_max,
    c10::string_view method, double percentile, int64_t num_bits, bool narrow_range,
    bool symmetric) {
  const char* op = kHistogramRangeOp;
  check_histogram_state(op, histogram, hist_min, hist_max);
  TORCH_CHECK(method == "mse" || method == "percentile", op,
              ": method must be 'mse' or 'percentile', got '", std::string(method), "'");
  TORCH_CHECK(percentile >= 50.0 && percentile <= 100.0, op,
              ": percentile must be in [50, 100], got ", percentile);
  TORCH_CHECK(num_bits >= 2 && num_bits <= 16, op, ": num_bits must be in [2, 16], got ",
              num_bits);
  const auto options = histogram.options().dtype(at::kFloat);
  if (histogram.is_meta()) {
    return {at::empty({}, options), at::empty({}, options)};
  }
  const HostHistogram h = read_histogram(op, histogram, hist_min, hist_max);
  TORCH_CHECK(!h.range.empty(), op,
              ": the histogram is empty (hist_min > hist_max): observe data first");
  const auto [lo, hi] =
      method == "mse"
          ? detail::histogram::mse_range(h.counts, h.range, num_bits, narrow_range, symmetric)
          : detail::histogram::percentile_range(h.counts, h.range, percentile, symmetric);
  return {at::scalar_tensor(lo, options), at::scalar_tensor(hi, options)};
}

}  // namespace

TORCH_LIBRARY_IMPL(edgeqat, CompositeExplicitAutograd, m) {
  m.impl("observe_histogram_", observe_histogram_composite);
  m.impl("histogram_range", histogram_range_composite);
}

}  // namespace edgeqat::ops
