// Quantization configuration for the LibTorch modules: the C++ twins of
// Python's edgeqat.QuantSpec and edgeqat.QConfig (python/edgeqat/config.py),
// with the same fields, defaults and validation.
//
// Both are values with chained setters in LibTorch's options style; every
// setter validates its argument and throws c10::Error naming the field and the
// value, so an invalid spec can never be built:
//
//   auto w4 = edgeqat::nn::QConfig::default_weight().num_bits(4);
//   auto cfg = edgeqat::nn::QConfig().weight(w4);
#pragma once

#include <cstdint>
#include <ostream>
#include <string>

namespace edgeqat::nn {

// Where a quantizer's range comes from while it observes (Python's RangeSource):
//  - Last: the range of the last batch (weights);
//  - Ema: exponential moving average of batch ranges (activations);
//  - Running: all-time min / max (calibration).
enum class RangeSource { Last, Ema, Running };

// "last", "ema" or "running".
const char* range_source_name(RangeSource source);

// The grid and the range source of one quantizer. Defaults (as Python's
// QuantSpec()): 8 bits, not narrow, asymmetric, per tensor, axis 0, EMA with
// decay 0.999.
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
  // One range per slice along axis().
  QuantSpec& per_channel(bool value);
  bool per_channel() const { return per_channel_; }
  // The channel axis when per_channel (0: output channels of conv / linear weights).
  QuantSpec& axis(int64_t value);
  int64_t axis() const { return axis_; }
  QuantSpec& range_source(RangeSource value);
  // "last", "ema" or "running", as in Python.
  QuantSpec& range_source(const std::string& value);
  RangeSource range_source() const { return range_source_; }
  // Decay of the moving average (range_source Ema), in [0, 1); the new batch
  // gets weight 1 - ema_decay.
  QuantSpec& ema_decay(double value);
  double ema_decay() const { return ema_decay_; }

  // Weight of a new batch in the observer update (1.0 unless Ema).
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
};

std::ostream& operator<<(std::ostream& os, const QuantSpec& spec);

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
  // After observation, ranges become parameters learned by gradient. Recorded
  // for the model-preparation code, as in Python; the modules do not read it
  // (edgeqat::nn::learn_ranges switches a model).
  QConfig& learn_ranges(bool value);
  bool learn_ranges() const { return learn_ranges_; }

  bool operator==(const QConfig& other) const;
  bool operator!=(const QConfig& other) const { return !(*this == other); }

 private:
  QuantSpec weight_;
  QuantSpec activation_;
  bool learn_ranges_ = false;
};

}  // namespace edgeqat::nn
