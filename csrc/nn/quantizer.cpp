// QuantSpec / QConfig validation and the FakeQuantizer module: the C++ twins
// of python/edgeqat/config.py and python/edgeqat/quantizer.py, with the same
// checks and messages and the same ops in the same order.
//
// Unlike Python, which mirrors mode_code and "a range was seen" in host
// attributes (kept in step by load_state_dict), forward reads mode_code (and,
// outside Observe training, the observed range's validity) from the buffers:
// C++ code commonly writes buffers directly (copying a Python state by name),
// and a mirror would go stale. On CPU the reads cost nothing; on CUDA each is
// a host sync.
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
  }
  return "<invalid>";
}

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
  per_channel_ = value;
  return *this;
}

QuantSpec& QuantSpec::axis(int64_t value) {
  axis_ = value;
  return *this;
}

QuantSpec& QuantSpec::range_source(RangeSource value) {
  TORCH_CHECK_VALUE(
      value == RangeSource::Last || value == RangeSource::Ema || value == RangeSource::Running,
      "QuantSpec.range_source must be RangeSource::Last, Ema or Running, got ",
      static_cast<int>(value));
  range_source_ = value;
  return *this;
}

QuantSpec& QuantSpec::range_source(const std::string& value) {
  if (value == "last") return range_source(RangeSource::Last);
  if (value == "ema") return range_source(RangeSource::Ema);
  TORCH_CHECK_VALUE(value == "running",
                    "QuantSpec.range_source must be 'last', 'ema' or 'running', got '", value, "'");
  return range_source(RangeSource::Running);
}

QuantSpec& QuantSpec::ema_decay(double value) {
  // Written so that NaN fails too.
  TORCH_CHECK_VALUE(value >= 0.0 && value < 1.0, "QuantSpec.ema_decay must be in [0, 1), got ",
                    value);
  ema_decay_ = value;
  return *this;
}

double QuantSpec::averaging_constant() const {
  return range_source_ == RangeSource::Ema ? 1.0 - ema_decay_ : 1.0;
}

bool QuantSpec::operator==(const QuantSpec& other) const {
  return num_bits_ == other.num_bits_ && narrow_range_ == other.narrow_range_ &&
         symmetric_ == other.symmetric_ && per_channel_ == other.per_channel_ &&
         axis_ == other.axis_ && range_source_ == other.range_source_ &&
         ema_decay_ == other.ema_decay_;
}

std::ostream& operator<<(std::ostream& os, const QuantSpec& spec) {
  return os << "QuantSpec(num_bits=" << spec.num_bits()
            << ", narrow_range=" << (spec.narrow_range() ? "true" : "false")
            << ", symmetric=" << (spec.symmetric() ? "true" : "false")
            << ", per_channel=" << (spec.per_channel() ? "true" : "false")
            << ", axis=" << spec.axis() << ", range_source='"
            << range_source_name(spec.range_source()) << "', ema_decay=" << spec.ema_decay() << ")";
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

QConfig& QConfig::learn_ranges(bool value) {
  learn_ranges_ = value;
  return *this;
}

bool QConfig::operator==(const QConfig& other) const {
  return weight_ == other.weight_ && activation_ == other.activation_ &&
         learn_ranges_ == other.learn_ranges_;
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
}

Mode FakeQuantizerImpl::mode() const {
  const int64_t code = mode_code.item<int64_t>();
  check_mode_value(code, (describe() + ".mode_code").c_str());
  return static_cast<Mode>(code);
}

FakeQuantizerImpl& FakeQuantizerImpl::set_mode(Mode mode) {
  check_mode_value(static_cast<int64_t>(mode), "mode");
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
  return (observed_min <= observed_max).all().item<bool>();
}

Range FakeQuantizerImpl::observed_range() const {
  TORCH_CHECK(has_range(), describe(),
              " has no observed range yet: run data through it in Observe mode "
              "(model->train()) or calibrate before freezing or evaluating");
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
  if (mode == Mode::Observe && is_training()) return observe_and_quantize(x);
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
  s << ", " << spec_.num_bits() << " bits)";
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
         << range_source_name(spec_.range_source()) << "')";
}

}  // namespace edgeqat::nn
