// QuantSpec / QATSchedule / QConfig validation and the FakeQuantizer module:
// the C++ twins of python/edgeqat/config.py and python/edgeqat/quantizer.py,
// with the same checks and messages and the same ops in the same order.
//
// Unlike Python, which mirrors mode_code, "a range was seen" and "the
// histogram has data not yet turned into a range" in host attributes (kept in
// step by load_state_dict), forward reads mode_code (and, outside Observe
// training, the observed range's validity) from the buffers: C++ code
// commonly writes buffers directly (copying a Python state by name), and a
// mirror would go stale. On CPU the reads cost nothing; on CUDA each is a host
// sync. For the histogram source this means the state itself says whether a
// range must be chosen: a training forward that adds data to the histogram
// also empties observed_min / observed_max (+inf / -inf), and a histogram
// with data next to an empty observed range is chosen from when the range is
// needed (as Python's load_state_dict decides for a loaded state).
#include "edgeqat/nn/quantizer.h"

#include <c10/util/Exception.h>
#include <torch/nn/init.h>

#include <cmath>
#include <limits>
#include <sstream>

#include "edgeqat/nn/config.h"
#include "edgeqat/ops.h"

namespace edgeqat::nn {

// ---------------------------------------------------------------------------
// QuantSpec, QConfig
// ---------------------------------------------------------------------------

const char* range_source_name(RangeSource source) {
  switch (source) {
    case RangeSource::Last:
      return "last";
    case RangeSource::Ema:
      return "ema";
    case RangeSource::Running:
      return "running";
    case RangeSource::Histogram:
      return "histogram";
  }
  return "<invalid>";
}

const char* histogram_method_name(HistogramMethod method) {
  switch (method) {
    case HistogramMethod::Mse:
      return "mse";
    case HistogramMethod::Percentile:
      return "percentile";
  }
  return "<invalid>";
}

namespace {

// As Python's _MAX_HISTOGRAM_BINS: the MSE search costs O(bins^2) per pass
// (~0.1 s at 2048 bins, 64x that at 16384).
constexpr int64_t kMaxHistogramBins = 16384;

constexpr const char* kHistogramPerTensorOnly =
    "QuantSpec.range_source='histogram' is per tensor only: set per_channel=false (per-channel "
    "weights take 'last' or 'running')";

}  // namespace

QuantSpec& QuantSpec::num_bits(int64_t value) {
  TORCH_CHECK_VALUE(2 <= value && value <= 16, "QuantSpec.num_bits must be an int in [2, 16], got ",
                    value);
  num_bits_ = value;
  return *this;
}

QuantSpec& QuantSpec::narrow_range(bool value) {
  narrow_range_ = value;
  return *this;
}

QuantSpec& QuantSpec::symmetric(bool value) {
  symmetric_ = value;
  return *this;
}

QuantSpec& QuantSpec::per_channel(bool value) {
  TORCH_CHECK_VALUE(!(value && range_source_ == RangeSource::Histogram), kHistogramPerTensorOnly,
                    ", got per_channel=true");
  per_channel_ = value;
  return *this;
}

QuantSpec& QuantSpec::axis(int64_t value) {
  axis_ = value;
  return *this;
}

QuantSpec& QuantSpec::range_source(RangeSource value) {
  TORCH_CHECK_VALUE(value == RangeSource::Last || value == RangeSource::Ema ||
                        value == RangeSource::Running || value == RangeSource::Histogram,
                    "QuantSpec.range_source must be RangeSource::Last, Ema, Running or Histogram, "
                    "got ",
                    static_cast<int>(value));
  TORCH_CHECK_VALUE(!(value == RangeSource::Histogram && per_channel_), kHistogramPerTensorOnly,
                    ", got per_channel=true");
  range_source_ = value;
  return *this;
}

QuantSpec& QuantSpec::range_source(const std::string& value) {
  if (value == "last") return range_source(RangeSource::Last);
  if (value == "ema") return range_source(RangeSource::Ema);
  if (value == "running") return range_source(RangeSource::Running);
  TORCH_CHECK_VALUE(value == "histogram",
                    "QuantSpec.range_source must be 'last', 'ema', 'running' or 'histogram', got '",
                    value, "'");
  return range_source(RangeSource::Histogram);
}

QuantSpec& QuantSpec::ema_decay(double value) {
  // Written so that NaN fails too.
  TORCH_CHECK_VALUE(value >= 0.0 && value < 1.0, "QuantSpec.ema_decay must be in [0, 1), got ",
                    value);
  ema_decay_ = value;
  return *this;
}

QuantSpec& QuantSpec::histogram_bins(int64_t value) {
  TORCH_CHECK_VALUE(2 <= value && value <= kMaxHistogramBins,
                    "QuantSpec.histogram_bins must be an int in [2, ", kMaxHistogramBins, "], got ",
                    value);
  histogram_bins_ = value;
  return *this;
}

QuantSpec& QuantSpec::histogram_method(HistogramMethod value) {
  TORCH_CHECK_VALUE(value == HistogramMethod::Mse || value == HistogramMethod::Percentile,
                    "QuantSpec.histogram_method must be HistogramMethod::Percentile or Mse, got ",
                    static_cast<int>(value));
  histogram_method_ = value;
  return *this;
}

QuantSpec& QuantSpec::histogram_method(const std::string& value) {
  if (value == "mse") return histogram_method(HistogramMethod::Mse);
  TORCH_CHECK_VALUE(value == "percentile",
                    "QuantSpec.histogram_method must be 'percentile' or 'mse', got '", value, "'");
  return histogram_method(HistogramMethod::Percentile);
}

QuantSpec& QuantSpec::percentile(double value) {
  // Written so that NaN fails too.
  TORCH_CHECK_VALUE(value >= 50.0 && value <= 100.0,
                    "QuantSpec.percentile must be in [50, 100], got ", value);
  percentile_ = value;
  return *this;
}

double QuantSpec::averaging_constant() const {
  return range_source_ == RangeSource::Ema ? 1.0 - ema_decay_ : 1.0;
}

bool QuantSpec::operator==(const QuantSpec& other) const {
  return num_bits_ == other.num_bits_ && narrow_range_ == other.narrow_range_ &&
         symmetric_ == other.symmetric_ && per_channel_ == other.per_channel_ &&
         axis_ == other.axis_ && range_source_ == other.range_source_ &&
         ema_decay_ == other.ema_decay_ && histogram_bins_ == other.histogram_bins_ &&
         histogram_method_ == other.histogram_method_ && percentile_ == other.percentile_;
}

std::ostream& operator<<(std::ostream& os, const QuantSpec& spec) {
  return os << "QuantSpec(num_bits=" << spec.num_bits()
            << ", narrow_range=" << (spec.narrow_range() ? "true" : "false")
            << ", symmetric=" << (spec.symmetric() ? "true" : "false")
            << ", per_channel=" << (spec.per_channel() ? "true" : "false")
            << ", axis=" << spec.axis() << ", range_source='"
            << range_source_name(spec.range_source()) << "', ema_decay=" << spec.ema_decay()
            << ", histogram_bins=" << spec.histogram_bins() << ", histogram_method='"
            << histogram_method_name(spec.histogram_method())
            << "', percentile=" << spec.percentile() << ")";
}

namespace {

void check_schedule_step(std::optional<int64_t> value, const char* name) {
  TORCH_CHECK_VALUE(!value.has_value() || *value >= 0, "QATSchedule.", name,
                    " must be a non-negative int or nullopt, got ",
                    value.has_value() ? std::to_string(*value) : std::string("nullopt"));
}

// Learned ranges are parameters, not observed ones: freezing after learning
// began would do nothing, which is certainly not what the schedule meant.
void check_learn_after_freeze(std::optional<int64_t> freeze_observers_step,
                              std::optional<int64_t> learn_ranges_step) {
  TORCH_CHECK_VALUE(
      !freeze_observers_step.has_value() || !learn_ranges_step.has_value() ||
          *learn_ranges_step > *freeze_observers_step,
      "QATSchedule.learn_ranges_step must come after freeze_observers_step (or leave one of them "
      "nullopt), got learn_ranges_step=",
      learn_ranges_step.value_or(-1),
      ", freeze_observers_step=", freeze_observers_step.value_or(-1));
}

void print_step(std::ostream& os, std::optional<int64_t> step) {
  if (step.has_value()) {
    os << *step;
  } else {
    os << "nullopt";
  }
}

}  // namespace

QATSchedule& QATSchedule::freeze_bn_step(std::optional<int64_t> value) {
  check_schedule_step(value, "freeze_bn_step");
  freeze_bn_step_ = value;
  return *this;
}

QATSchedule& QATSchedule::freeze_observers_step(std::optional<int64_t> value) {
  check_schedule_step(value, "freeze_observers_step");
  check_learn_after_freeze(value, learn_ranges_step_);
  freeze_observers_step_ = value;
  return *this;
}

QATSchedule& QATSchedule::learn_ranges_step(std::optional<int64_t> value) {
  check_schedule_step(value, "learn_ranges_step");
  check_learn_after_freeze(freeze_observers_step_, value);
  learn_ranges_step_ = value;
  return *this;
}

bool QATSchedule::operator==(const QATSchedule& other) const {
  return freeze_bn_step_ == other.freeze_bn_step_ &&
         freeze_observers_step_ == other.freeze_observers_step_ &&
         learn_ranges_step_ == other.learn_ranges_step_;
}

std::ostream& operator<<(std::ostream& os, const QATSchedule& schedule) {
  os << "QATSchedule(freeze_bn_step=";
  print_step(os, schedule.freeze_bn_step());
  os << ", freeze_observers_step=";
  print_step(os, schedule.freeze_observers_step());
  os << ", learn_ranges_step=";
  print_step(os, schedule.learn_ranges_step());
  return os << ")";
}

QuantSpec QConfig::default_weight() {
  return QuantSpec()
      .num_bits(8)
      .narrow_range(true)
      .symmetric(true)
      .per_channel(true)
      .axis(0)
      .range_source(RangeSource::Last);
}

QuantSpec QConfig::default_activation() {
  return QuantSpec().num_bits(8).range_source(RangeSource::Ema).ema_decay(0.999);
}

QConfig::QConfig() : weight_(default_weight()), activation_(default_activation()) {}

QConfig& QConfig::weight(const QuantSpec& value) {
  weight_ = value;
  return *this;
}

QConfig& QConfig::activation(const QuantSpec& value) {
  TORCH_CHECK_VALUE(!value.per_channel(),
                    "QConfig.activation.per_channel must be false: the int8 model has one scale "
                    "and zero point per activation tensor, got per_channel=true");
  activation_ = value;
  return *this;
}

QConfig& QConfig::schedule(std::optional<QATSchedule> value) {
  schedule_ = std::move(value);
  return *this;
}

bool QConfig::operator==(const QConfig& other) const {
  return weight_ == other.weight_ && activation_ == other.activation_ &&
         schedule_ == other.schedule_ && quantize_bias_ == other.quantize_bias_;
}

// ---------------------------------------------------------------------------
// FakeQuantizer
// ---------------------------------------------------------------------------

const char* mode_name(Mode mode) {
  switch (mode) {
    case Mode::Observe:
      return "OBSERVE";
    case Mode::Frozen:
      return "FROZEN";
    case Mode::Learn:
      return "LEARN";
    case Mode::Off:
      return "OFF";
  }
  return "<invalid>";
}

namespace {

void check_mode_value(int64_t code, const char* what) {
  TORCH_CHECK_VALUE(0 <= code && code <= 3, what,
                    " must be a Mode (0 OBSERVE, 1 FROZEN, 2 LEARN, 3 OFF), got ", code);
}

}  // namespace

FakeQuantizerImpl::FakeQuantizerImpl(const QuantSpec& spec, std::optional<int64_t> channels,
                                     Mode mode)
    : spec_(spec), channels_(channels), initial_mode_(mode) {
  check_mode_value(static_cast<int64_t>(mode), "mode");
  TORCH_CHECK_VALUE(mode != Mode::Learn,
                    "mode=Mode::Learn needs an observed range to start from: build the quantizer "
                    "in Observe mode, run data through it, then call learn() (or load a state)");
  if (spec_.per_channel()) {
    TORCH_CHECK_VALUE(channels_.has_value() && *channels_ > 0,
                      "channels must be a positive int for a per-channel spec, got ",
                      channels_.has_value() ? std::to_string(*channels_) : std::string("none"));
  }
  reset();
}

void FakeQuantizerImpl::reset() {
  std::vector<int64_t> shape;
  if (spec_.per_channel()) shape.push_back(*channels_);
  constexpr float kInf = std::numeric_limits<float>::infinity();
  // min > max marks "nothing observed yet"; observe_min_max_ then takes the
  // first batch's range as it is.
  observed_min = register_buffer("observed_min", torch::full(shape, kInf));
  observed_max = register_buffer("observed_max", torch::full(shape, -kInf));
  learned_min = register_parameter("learned_min", torch::zeros(shape));
  learned_max = register_parameter("learned_max", torch::zeros(shape));
  mode_code = register_buffer("mode_code",
                              torch::full({}, static_cast<int64_t>(initial_mode_), torch::kUInt8));
  if (is_histogram()) {
    // int64 counts stay exact; float64 ends keep the bin edges exact as the
    // range grows. min > max: empty. (As Python, same names and dtypes.)
    const auto f64 = torch::TensorOptions().dtype(torch::kDouble);
    histogram = register_buffer("histogram", torch::zeros({spec_.histogram_bins()}, torch::kLong));
    histogram_min = register_buffer("histogram_min", torch::full({}, kInf, f64));
    histogram_max = register_buffer("histogram_max", torch::full({}, -kInf, f64));
  }
}

Mode FakeQuantizerImpl::mode() const {
  const int64_t code = mode_code.item<int64_t>();
  check_mode_value(code, (describe() + ".mode_code").c_str());
  return static_cast<Mode>(code);
}

FakeQuantizerImpl& FakeQuantizerImpl::set_mode(Mode mode) {
  check_mode_value(static_cast<int64_t>(mode), "mode");
  if ((mode == Mode::Frozen || mode == Mode::Learn) && histogram_pending()) {
    choose_histogram_range();
  }
  if (mode == Mode::Learn && this->mode() != Mode::Learn) {
    const auto [lo, hi] = observed_range();
    torch::NoGradGuard no_grad;
    learned_min.copy_(lo);
    learned_max.copy_(hi);
  }
  mode_code.fill_(static_cast<int64_t>(mode));
  return *this;
}

bool FakeQuantizerImpl::has_range() const {
  return (observed_min <= observed_max).all().item<bool>() || histogram_pending();
}

bool FakeQuantizerImpl::histogram_pending() const {
  return is_histogram() && (histogram_min <= histogram_max).item<bool>() &&
         !(observed_min <= observed_max).all().item<bool>();
}

Range FakeQuantizerImpl::observed_range() const {
  if (histogram_pending()) return choose_histogram_range();
  TORCH_CHECK((observed_min <= observed_max).all().item<bool>(), describe(),
              " has no observed range yet: ",
              is_histogram() ? "run calibration data through it in Observe mode (model->train())"
                             : "run data through it in Observe mode (model->train()) or calibrate",
              " before freezing or evaluating");
  return derived_range();
}

Range FakeQuantizerImpl::select_range() {
  TORCH_CHECK(is_histogram(), describe(),
              ": select_range() chooses a range from a histogram; this quantizer has "
              "range_source='",
              range_source_name(spec_.range_source()), "', not 'histogram'");
  return choose_histogram_range();
}

Range FakeQuantizerImpl::choose_histogram_range() const {
  TORCH_CHECK((histogram_min <= histogram_max).item<bool>(), describe(),
              " has an empty histogram: run calibration data through it in Observe mode "
              "(model->train()) first");
  const auto [lo, hi] = edgeqat::histogram_range(
      histogram, histogram_min, histogram_max, histogram_method_name(spec_.histogram_method()),
      spec_.percentile(), spec_.num_bits(), spec_.narrow_range(), spec_.symmetric());
  {
    // The buffers hold the chosen range (a cache of a function of the
    // histogram): written through the const tensor handles.
    torch::NoGradGuard no_grad;
    observed_min.copy_(lo);
    observed_max.copy_(hi);
  }
  return derived_range();
}

Range FakeQuantizerImpl::derived_range() const {
  auto lo = observed_min.detach().clamp_max(0.0);
  auto hi = observed_max.detach().clamp_min(0.0);
  if (spec_.symmetric()) {
    auto bound = torch::maximum(-lo, hi);
    return {-bound, bound};
  }
  return {lo, hi};
}

Range FakeQuantizerImpl::learned_range() const {
  if (spec_.symmetric()) {
    auto bound = learned_max.abs();
    return {-bound, bound};
  }
  // If gradient steps cross the ends, the range degenerates to one point
  // (output 0) rather than becoming invalid; gradients still flow.
  return {learned_min, torch::maximum(learned_max, learned_min)};
}

Range FakeQuantizerImpl::quant_range() const {
  if (mode() == Mode::Learn) {
    auto [lo, hi] = learned_range();
    return {lo.detach(), hi.detach()};
  }
  return observed_range();
}

torch::Tensor FakeQuantizerImpl::observe_and_quantize(const torch::Tensor& x,
                                                      std::optional<double> clamp_min,
                                                      std::optional<double> clamp_max) {
  TORCH_CHECK(!is_histogram(), describe(),
              ": observe_and_quantize() is the observer step of the 'last', 'ema' and 'running' "
              "range sources; a histogram source observes in forward() (in float)");
  // observe_min_max_, observed_range() and the fake quant in one op (bit for
  // bit the three), as Python's FakeQuantizer._observe_and_quantize.
  return edgeqat::observe_fake_quant_(
      observed_min, observed_max, x,
      spec_.per_channel() ? std::optional<int64_t>(spec_.axis()) : std::nullopt,
      spec_.averaging_constant(), spec_.range_source() == RangeSource::Running, spec_.symmetric(),
      spec_.num_bits(), spec_.narrow_range(), clamp_min, clamp_max);
}

torch::Tensor FakeQuantizerImpl::forward(const torch::Tensor& x) {
  const Mode mode = this->mode();
  if (mode == Mode::Off) return x;
  if (mode == Mode::Observe && is_training()) {
    if (!is_histogram()) return observe_and_quantize(x);
    edgeqat::observe_histogram_(histogram, histogram_min, histogram_max, x);
    if (x.numel() > 0) {
      // New data: the chosen range (if any) is out of date; the next use
      // chooses again (see the top of this file).
      constexpr float kInf = std::numeric_limits<float>::infinity();
      observed_min.fill_(kInf);
      observed_max.fill_(-kInf);
    }
    return x;  // calibration runs in float
  }
  auto [lo, hi] = mode == Mode::Learn ? learned_range() : observed_range();
  lo = lo.to(x.device());
  hi = hi.to(x.device());
  if (spec_.per_channel()) {
    return edgeqat::fake_quant_with_min_max_vars_per_channel(
        x, lo, hi, spec_.axis(), spec_.num_bits(), spec_.narrow_range());
  }
  return edgeqat::fake_quant_with_min_max_vars(x, lo, hi, spec_.num_bits(), spec_.narrow_range());
}

std::string FakeQuantizerImpl::describe() const {
  std::ostringstream s;
  s << "FakeQuantizer(";
  if (spec_.per_channel()) {
    s << "per-channel (axis " << spec_.axis() << ")";
  } else {
    s << "per-tensor";
  }
  s << ", " << spec_.num_bits() << " bits" << (is_histogram() ? ", histogram" : "") << ")";
  return s.str();
}

void FakeQuantizerImpl::pretty_print(std::ostream& stream) const {
  const int64_t code = mode_code.defined() ? mode_code.item<int64_t>() : -1;
  stream << "edgeqat::nn::FakeQuantizer(mode="
         << (0 <= code && code <= 3 ? mode_name(static_cast<Mode>(code)) : "<invalid>")
         << ", num_bits=" << spec_.num_bits()
         << ", narrow_range=" << (spec_.narrow_range() ? "true" : "false")
         << ", symmetric=" << (spec_.symmetric() ? "true" : "false")
         << ", per_channel=" << (spec_.per_channel() ? "true" : "false")
         << ", axis=" << spec_.axis() << ", range_source='"
         << range_source_name(spec_.range_source()) << "'";
  if (is_histogram()) {
    stream << ", histogram_bins=" << spec_.histogram_bins() << ", histogram_method='"
           << histogram_method_name(spec_.histogram_method()) << "'";
    if (spec_.histogram_method() == HistogramMethod::Percentile) {
      stream << ", percentile=" << spec_.percentile();
    }
  }
  stream << ")";
}

}  // namespace edgeqat::nn
