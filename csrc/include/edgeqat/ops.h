// The fake-quant ops as C++ functions. Each call goes through the PyTorch
// dispatcher, so it runs the same kernels (and the same C++ autograd) as
// torch.ops.edgeqat.* in Python.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>
#include <tuple>

namespace edgeqat {

// TensorFlow's FakeQuantWithMinMaxVars: nudges [min, max] so that 0.0 is on
// the grid {quant_min .. 2^num_bits - 1} (quant_min = 1 if narrow_range),
// clamps x into the nudged range and rounds it to the grid. Gradients: x gets
// the incoming gradient inside the nudged range (both ends included), min the
// sum below it, max the sum above it.
//   x:   floating tensor of any shape and layout
//   min, max: 0-dim floating tensors on x's device, finite, min <= max
//   num_bits in [2, 16]
// Returns a tensor of x's shape, dtype and layout.
at::Tensor fake_quant_with_min_max_vars(const at::Tensor& x, const at::Tensor& min,
                                        const at::Tensor& max, int64_t num_bits = 8,
                                        bool narrow_range = false);

// The same with one range per slice along `axis` (negative counts from the
// end): min and max are 1-D of length x.size(axis). Gradients to min and max
// are summed over every axis except `axis`.
at::Tensor fake_quant_with_min_max_vars_per_channel(const at::Tensor& x, const at::Tensor& min,
                                                    const at::Tensor& max, int64_t axis,
                                                    int64_t num_bits = 8,
                                                    bool narrow_range = false);

// Observer state update, in place: the range of x (per tensor, or per slice
// along `axis`) folded into [running_min, running_max]. State with
// running_min > running_max (start at +inf / -inf) takes the first batch's
// range; then `accumulate` keeps the all-time min/max, otherwise an
// exponential moving average new = old + averaging_constant * (batch - old)
// (1.0: last batch only). Empty x: no change. NaN/inf in x: error.
void observe_min_max_(at::Tensor& running_min, at::Tensor& running_max, const at::Tensor& x,
                      std::optional<int64_t> axis = std::nullopt, double averaging_constant = 1.0,
                      bool accumulate = false);

// One observer step of a fake quantizer, fused: observe_min_max_ on
// [observed_min, observed_max] (same arguments, same state, bit for bit),
// then fake_quant_with_min_max_vars[_per_channel] of x with the range made
// from the updated state: [min(observed_min, 0), max(observed_max, 0)], or
// [-b, b] with b the larger magnitude when `symmetric`. Returns the
// fake-quantized x (x's shape, dtype and layout). Gradient: to x only,
// straight through inside the nudged range; the state must not require grad.
// With clamp_min / clamp_max the observer sees clamp(x, clamp_min, clamp_max)
// instead (a ReLU / ReLU6 fused in front of the quantizer; never
// materialised); x itself is still what is fake-quantized.
at::Tensor observe_fake_quant_(at::Tensor& observed_min, at::Tensor& observed_max,
                               const at::Tensor& x, std::optional<int64_t> axis = std::nullopt,
                               double averaging_constant = 1.0, bool accumulate = false,
                               bool symmetric = false, int64_t num_bits = 8,
                               bool narrow_range = false,
                               std::optional<double> clamp_min = std::nullopt,
                               std::optional<double> clamp_max = std::nullopt);

// ConvBn2d's weight path in one op: Wf = weight * factor (factor [C], one BN fold factor
// f = gamma / sqrt(running_var + eps) per output channel, weight [C, ...], same dtype); if
// `observe`, the observer step of observe_min_max_ on Wf (per output channel when the state is
// [C], axis 0; per tensor when it is 0-dim; same arguments, bit for bit); then Wq =
// fake_quant_with_min_max_vars[_per_channel](Wf) with the range made from the state as
// observe_fake_quant_ makes it. Returns Wq, or with `unfold` Wq / f per channel (the float
// weight itself where f == 0). Gradients to weight and factor (bit for bit the unfused ops' for
// weight; the factor's per-channel sums within float rounding); the state gets none and must
// not require grad. No double backward.
at::Tensor fold_weight_fake_quant_(at::Tensor& observed_min, at::Tensor& observed_max,
                                   const at::Tensor& weight, const at::Tensor& factor, bool observe,
                                   double averaging_constant = 1.0, bool accumulate = false,
                                   bool symmetric = false, int64_t num_bits = 8,
                                   bool narrow_range = false, bool unfold = false);

// Histogram observer, in place: adds the values of x to `histogram` (1-D
// int64 counts, bins of equal width over [hist_min, hist_max], 0-dim float32
// or float64; hist_min > hist_max means empty). The first batch sets the
// range to its min / max; a batch outside it widens the range by a power of
// two, so old bins merge whole and every count stays exact. Empty x: no
// change. NaN/inf in x: error.
void observe_histogram_(at::Tensor& histogram, at::Tensor& hist_min, at::Tensor& hist_max,
                        const at::Tensor& x);

// The quantization range chosen from a histogram: method "percentile" keeps
// `percentile` percent of the values (of |x| when symmetric); "mse" minimises
// the expected squared error of fake_quant_with_min_max_vars with that range
// (clipping and rounding, the range nudged as the op nudges it). Returns
// (min, max) as float32 0-dim tensors on the histogram's device; the range
// contains 0 and is [-b, b] when symmetric.
std::tuple<at::Tensor, at::Tensor> histogram_range(
    const at::Tensor& histogram, const at::Tensor& hist_min, const at::Tensor& hist_max,
    c10::string_view method = "mse", double percentile = 99.99, int64_t num_bits = 8,
    bool narrow_range = false, bool symmetric = false);

}  // namespace edgeqat
