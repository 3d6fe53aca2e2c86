// The fake quantizer as a LibTorch module: the C++ twin of Python's
// edgeqat.FakeQuantizer (python/edgeqat/quantizer.py), over the same ops
// (edgeqat::observe_fake_quant_ while observing in training mode,
// edgeqat::fake_quant_with_min_max_vars[_per_channel] otherwise; for the
// histogram range source edgeqat::observe_histogram_ / histogram_range).
//
// State lives in buffers and parameters only, with Python's names:
//   observed_min, observed_max  buffers, [] per tensor or [channels] per channel,
//                               +inf / -inf until the first batch is observed;
//   learned_min, learned_max    parameters of the same shape (the LEARN ranges);
//   mode_code                   uint8 0-dim buffer holding the Mode;
//   histogram                   int64 [histogram_bins] counts, and
//   histogram_min, histogram_max  float64 [] (the range the bins cover; +inf /
//                               -inf while empty), for range_source Histogram only.
// So torch::save / torch::load (and a Python state_dict copied by name)
// restore a quantizer mid-training (or mid-calibration) exactly, its mode
// included.
#pragma once

#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <cstdint>
#include <optional>
#include <ostream>
#include <string>
#include <utility>

#include "edgeqat/nn/config.h"

namespace edgeqat::nn {

// What a FakeQuantizer does in forward (the values are Python's Mode values,
// stored in mode_code):
//  - Observe: in training mode, fold the batch into the observed range, then
//    fake-quantize with it; in eval mode, only fake-quantize. With range
//    source Histogram, training mode only adds the batch to the histogram and
//    returns it unchanged (calibration runs in float).
//  - Frozen: fake-quantize with the observed range, never update it.
//  - Learn: fake-quantize with learned_min / learned_max, parameters trained
//    by gradient (initialised from the observed range).
//  - Off: identity.
enum class Mode : uint8_t { Observe = 0, Frozen = 1, Learn = 2, Off = 3 };

// "OBSERVE", "FROZEN", "LEARN" or "OFF" (Python's Mode names).
const char* mode_name(Mode mode);

// A (min, max) pair of range tensors.
using Range = std::pair<torch::Tensor, torch::Tensor>;

// Fake-quantizes a tensor with TensorFlow's FakeQuantWithMinMaxVars.
//   spec:     grid and range source.
//   channels: number of channels along spec.axis(); required (positive) when
//             spec.per_channel(), ignored otherwise.
//   mode:     initial mode; Learn is refused (it needs an observed range:
//             observe data first, then call learn()).
// The quantization range always contains 0 and is [-b, b] when symmetric.
//
// Histogram range source (spec.range_source() == RangeSource::Histogram,
// post-training calibration; docs/observers.md): in Observe mode and training
// mode forward adds the batch to `histogram` and returns x itself (like
// TFLite's calibrator, which runs the float model). The range is chosen from
// the histogram (spec.histogram_method()) by select_range() and written into
// observed_min / observed_max; that runs by itself when the quantizer leaves
// Observe (freeze(), learn()) and whenever the range is needed after new data
// (eval-mode forward, observed_range(), quant_range()). From then on Frozen,
// Learn and export work as for any source.
//
//   edgeqat::nn::FakeQuantizer q(edgeqat::nn::QuantSpec{});  // EMA activation quantizer
//   auto y = q(torch::randn({8, 16}));                        // observes, then quantizes
//   q->learn();                                               // ranges become parameters
//
//   edgeqat::nn::FakeQuantizer c(edgeqat::nn::QuantSpec().range_source("histogram"));
//   for (const auto& x : calibration_batches) c(x);          // float: fills the histogram
//   c->freeze();                                              // MSE range chosen from it
class FakeQuantizerImpl : public torch::nn::Cloneable<FakeQuantizerImpl> {
 public:
  explicit FakeQuantizerImpl(const QuantSpec& spec, std::optional<int64_t> channels = std::nullopt,
                             Mode mode = Mode::Observe);

  // (Re)creates the state: nothing observed, learned ranges 0, the initial mode.
  void reset() override;

  // Input of any shape (per channel: spec.axis() must have `channels`
  // entries); the output has the input's shape and dtype.
  torch::Tensor forward(const torch::Tensor& x);
  // forward's step in Observe mode while training, one edgeqat::observe_fake_quant_
  // call: the state observes x, or clamp(x, clamp_min, clamp_max) when a bound
  // is given (an activation fused in front, see ActQuant), and x is
  // fake-quantized with the updated range. Not for range_source Histogram
  // (an error: forward observes those).
  torch::Tensor observe_and_quantize(const torch::Tensor& x,
                                     std::optional<double> clamp_min = std::nullopt,
                                     std::optional<double> clamp_max = std::nullopt);

  // The mode stored in mode_code (checked: a loaded mode_code outside 0..3 is
  // an error naming the value).
  Mode mode() const;
  // Switching to Learn from another mode initialises learned_min / learned_max
  // from observed_range() (an error if nothing was observed). Switching to
  // Frozen or Learn first chooses the range of a histogram source that has
  // new data (select_range()).
  FakeQuantizerImpl& set_mode(Mode mode);
  FakeQuantizerImpl& observe() { return set_mode(Mode::Observe); }
  FakeQuantizerImpl& freeze() { return set_mode(Mode::Frozen); }
  FakeQuantizerImpl& learn() { return set_mode(Mode::Learn); }
  FakeQuantizerImpl& disable() { return set_mode(Mode::Off); }

  // Whether every channel has observed data (for a histogram source: or the
  // histogram has data, the range is chosen from it when first needed).
  bool has_range() const;
  // The observed range widened to contain 0, symmetric if the spec says so;
  // detached. An error if has_range() is false. A histogram source first
  // chooses its range if the histogram has data not yet chosen from (this
  // writes observed_min / observed_max, a cache of a function of the
  // histogram, hence const).
  Range observed_range() const;
  // Chooses the range from the histogram (spec.histogram_method(), through
  // edgeqat::histogram_range) and writes it into observed_min / observed_max;
  // returns it as observed_range() does. Only for range_source Histogram (an
  // error otherwise, and for an empty histogram). The choice depends only on
  // the histogram: calling it again without new data gives the same range.
  Range select_range();
  // The learned range as used in forward (differentiable): symmetric
  // [-|learned_max|, |learned_max|]; otherwise [learned_min, max(learned_max,
  // learned_min)] (ends that crossed make a one-point range, not an invalid one).
  Range learned_range() const;
  // The range used now (learned in Learn mode, observed otherwise), detached.
  Range quant_range() const;

  const QuantSpec& spec() const { return spec_; }
  std::optional<int64_t> channels() const { return channels_; }

  void pretty_print(std::ostream& stream) const override;

  torch::Tensor observed_min, observed_max, learned_min, learned_max, mode_code;
  // range_source Histogram only (undefined otherwise).
  torch::Tensor histogram, histogram_min, histogram_max;

 private:
  // "FakeQuantizer(per-tensor, 8 bits)" (", histogram" added for that source),
  // for error messages (as Python's _describe).
  std::string describe() const;
  bool is_histogram() const { return spec_.range_source() == RangeSource::Histogram; }
  // A histogram source whose histogram holds data and whose observed range is
  // empty (never chosen, or emptied by new data): the range must be chosen.
  bool histogram_pending() const;
  // select_range() without the source check; writes the buffers (see observed_range()).
  Range choose_histogram_range() const;
  // The range made from observed_min / observed_max, unchecked.
  Range derived_range() const;

  QuantSpec spec_;
  std::optional<int64_t> channels_;
  Mode initial_mode_;
};
TORCH_MODULE(FakeQuantizer);

}  // namespace edgeqat::nn
