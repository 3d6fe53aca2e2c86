// Quantization configuration for the LibTorch modules: the C++ twins of
// Python's edgeqat.QuantSpec, edgeqat.QATSchedule and edgeqat.QConfig
// (python/edgeqat/config.py), with the same fields, defaults and validation.
//
// Both are values with chained setters in LibTorch's options style; every
// setter validates its argument and throws c10::Error naming the field and the
// value, so an invalid spec can never be built:
//
//   auto w4 = edgeqat::nn::QConfig::default_weight().num_bits(4);
//   auto cfg = edgeqat::nn::QConfig().weight(w4);
#pragma once

#include <cstdint>
#include <optional>
#include <ostream>
#include <string>

namespace edgeqat::nn {

// Where a quantizer's range comes from while it observes (Python's RangeSource):
//  - Last: the range of the last batch (weights);
//  - Ema: exponential moving average of batch ranges (activations);
//  - Running: all-time min / max (calibration);
//  - Histogram: a histogram of every value observed, the range chosen from it
//    by histogram_method (post-training calibration; per tensor only).
enum class RangeSource { Last, Ema, Running, Histogram };

// "last", "ema", "running" or "histogram".
const char* range_source_name(RangeSource source);

// How a Histogram range source chooses the range (Python's HistogramMethod):
//  - Mse: the range with the smallest expected squared error of the fake
//    quant, clipping and rounding (estimated from the histogram);
//  - Percentile: the range that holds percentile() percent of the values.
enum class HistogramMethod { Mse, Percentile };

// "mse" or "percentile".
const char* histogram_method_name(HistogramMethod method);

// The grid and the range source of one quantizer. Defaults (as Python's
// QuantSpec()): 8 bits, not narrow, asymmetric, per tensor, axis 0, EMA with
// decay 0.999; for the histogram source 2048 bins, method Mse, percentile 99.99.
//
// range_source Histogram is per tensor only: per_channel(true) on a histogram
// spec, or range_source(Histogram) on a per-channel one, throws (Python checks
// the finished dataclass; C++ checks each setter, so set per_channel(false)
// first when turning a per-channel spec into a histogram one).
//
//   auto calib = edgeqat::nn::QuantSpec().range_source("histogram")
//                    .histogram_method("percentile").percentile(99.9);
class QuantSpec {
 public:
  QuantSpec() = default;

  // Bits of the integer grid, 2 to 16.
  QuantSpec& num_bits(int64_t value);
  int64_t num_bits() const { return num_bits_; }
  // Use [1, 2^num_bits - 1] (symmetric int8 weights: [-127, 127]).
  QuantSpec& narrow_range(bool value);
  bool narrow_range() const { return narrow_range_; }
  // The range is [-b, b] with b = max(|min|, |max|).
  QuantSpec& symmetric(bool value);
  bool symmetric() const { return symmetric_; }
  // One range per slice along axis() (not with range_source Histogram).
  QuantSpec& per_channel(bool value);
  bool per_channel() const { return per_channel_; }
  // The channel axis when per_channel (0: output channels of conv / linear weights).
  QuantSpec& axis(int64_t value);
  int64_t axis() const { return axis_; }
  QuantSpec& range_source(RangeSource value);
  // "last", "ema", "running" or "histogram", as in Python.
  QuantSpec& range_source(const std::string& value);
  RangeSource range_source() const { return range_source_; }
  // Decay of the moving average (range_source Ema), in [0, 1); the new batch
  // gets weight 1 - ema_decay.
  QuantSpec& ema_decay(double value);
  double ema_decay() const { return ema_decay_; }
  // Bins of the histogram (range_source Histogram), 2 to 16384 (the MSE search
  // costs O(bins^2)). PyTorch's HistogramObserver and TensorRT also use 2048.
  QuantSpec& histogram_bins(int64_t value);
  int64_t histogram_bins() const { return histogram_bins_; }
  QuantSpec& histogram_method(HistogramMethod value);
  // "mse" or "percentile", as in Python.
  QuantSpec& histogram_method(const std::string& value);
  HistogramMethod histogram_method() const { return histogram_method_; }
  // For histogram_method Percentile, in percent, 50 to 100. A symmetric range
  // [-t, t] keeps that share of |x|; an asymmetric one runs from the
  // (100 - percentile)-th to the percentile-th percentile. 100 keeps everything.
  QuantSpec& percentile(double value);
  double percentile() const { return percentile_; }

  // Weight of a new batch in the observer update (1.0 unless Ema; unused by
  // Running and Histogram).
  double averaging_constant() const;

  bool operator==(const QuantSpec& other) const;
  bool operator!=(const QuantSpec& other) const { return !(*this == other); }

 private:
  int64_t num_bits_ = 8;
  bool narrow_range_ = false;
  bool symmetric_ = false;
  bool per_channel_ = false;
  int64_t axis_ = 0;
  RangeSource range_source_ = RangeSource::Ema;
  double ema_decay_ = 0.999;
  int64_t histogram_bins_ = 2048;
  HistogramMethod histogram_method_ = HistogramMethod::Mse;
  double percentile_ = 99.99;
};

std::ostream& operator<<(std::ostream& os, const QuantSpec& spec);

// After how many training steps each QAT phase starts (nullopt: never), the
// twin of Python's edgeqat.QATSchedule. A step is one call of a QATScheduler
// (edgeqat/nn/schedule.h) while the model trains; at the start of step n
// (counting from 0), each phase whose step equals n begins, before that
// step's forward:
//  - freeze_bn_step: edgeqat::nn::freeze_bn (train the folded graph from then on);
//  - freeze_observers_step: edgeqat::nn::freeze_observers (ranges stop moving);
//  - learn_ranges_step: edgeqat::nn::learn_ranges (ranges become parameters;
//    model->parameters() includes them, give them to the optimizer).
// Every setter validates (a non-negative step, learn_ranges_step after
// freeze_observers_step when both are set) and throws c10::ValueError naming
// the field and the value; a failed setter changes nothing.
//
//   auto schedule = edgeqat::nn::QATSchedule().freeze_bn_step(2000).freeze_observers_step(3000);
class QATSchedule {
 public:
  QATSchedule() = default;

  QATSchedule& freeze_bn_step(std::optional<int64_t> value);
  std::optional<int64_t> freeze_bn_step() const { return freeze_bn_step_; }
  QATSchedule& freeze_observers_step(std::optional<int64_t> value);
  std::optional<int64_t> freeze_observers_step() const { return freeze_observers_step_; }
  QATSchedule& learn_ranges_step(std::optional<int64_t> value);
  std::optional<int64_t> learn_ranges_step() const { return learn_ranges_step_; }

  bool operator==(const QATSchedule& other) const;
  bool operator!=(const QATSchedule& other) const { return !(*this == other); }

 private:
  std::optional<int64_t> freeze_bn_step_;
  std::optional<int64_t> freeze_observers_step_;
  std::optional<int64_t> learn_ranges_step_;
};

std::ostream& operator<<(std::ostream& os, const QATSchedule& schedule);

// How a model is quantized. Defaults are TensorFlow's 8-bit QAT recipe:
// weights per output channel (axis 0), symmetric, narrow range, last-value
// range; activations per tensor, asymmetric, EMA with decay 0.999.
class QConfig {
 public:
  QConfig();

  // 8 bits, per channel on axis 0, symmetric, narrow range, range_source Last.
  static QuantSpec default_weight();
  // 8 bits, per tensor, asymmetric, range_source Ema, ema_decay 0.999.
  static QuantSpec default_activation();

  QConfig& weight(const QuantSpec& value);
  const QuantSpec& weight() const { return weight_; }
  // Must be per tensor: the int8 model has one scale and zero point per
  // activation tensor.
  QConfig& activation(const QuantSpec& value);
  const QuantSpec& activation() const { return activation_; }
  // When the QAT phases start (default nullopt: call freeze_bn /
  // freeze_observers / learn_ranges by hand). Python's prepare_qat reads it; a
  // C++ model has no prepare step, so the model-building code reads it:
  // edgeqat::nn::attach_schedule(model, *config.schedule()) (edgeqat/nn/schedule.h).
  QConfig& schedule(std::optional<QATSchedule> value);
  const std::optional<QATSchedule>& schedule() const { return schedule_; }
  // Simulate the int8 model's int32 bias (default true): a QuantConv2d / ConvBn2d /
  // QuantLinear linked to the ActQuant of its input (set_input_quantizer) adds
  // round(b / (s_in * s_w[c])) * s_in * s_w[c], the bias the int8 model uses, instead of the
  // float b (Python's QConfig.quantize_bias; edgeqat/nn/modules.h).
  QConfig& quantize_bias(bool value) {
    quantize_bias_ = value;
    return *this;
  }
  bool quantize_bias() const { return quantize_bias_; }

  bool operator==(const QConfig& other) const;
  bool operator!=(const QConfig& other) const { return !(*this == other); }

 private:
  QuantSpec weight_;
  QuantSpec activation_;
  std::optional<QATSchedule> schedule_;
  bool quantize_bias_ = true;
};

}  // namespace edgeqat::nn
