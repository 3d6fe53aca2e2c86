// Tests of the histogram range source of the LibTorch quantizer (edgeqat::nn),
// the C++ twin of Python's QuantSpec(range_source="histogram") / FakeQuantizer:
//  - QuantSpec: Python's defaults, validation and messages (field and value);
//  - FakeQuantizer: Python's buffer names, shapes and dtypes; calibration in
//    float (the very input comes back); the histogram and the chosen range
//    bit for bit those of edgeqat::observe_histogram_ / histogram_range on the
//    same data; the range chosen on freeze / learn / first use, chosen again
//    after new data; torch::save / torch::load mid-calibration;
//  - ActQuant (not fused) and SharedActQuant (the identity while the source
//    calibrates), the model controls, errors.
// The C++ / Python parity of a histogram calibration is in
// tests/python/test_cpp_parity.py.
#include "catch_torch.h"

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "edgeqat/edgeqat.h"

namespace {

namespace qnn = edgeqat::nn;
using Catch::Contains;
using torch::Tensor;

constexpr double kInf = std::numeric_limits<double>::infinity();

bool same(const Tensor& a, const Tensor& b) {
  return a.defined() && b.defined() && a.sizes() == b.sizes() && a.dtype() == b.dtype() &&
         torch::equal(a, b);
}

std::vector<std::string> keys_of(const torch::OrderedDict<std::string, Tensor>& dict) {
  std::vector<std::string> keys;
  for (const auto& item : dict) keys.push_back(item.key());
  return keys;
}

// The histogram state the ops build from the same batches, and the range
// histogram_range chooses from it for `spec`.
struct Reference {
  Tensor counts, lo, hi;
  explicit Reference(int64_t bins)
      : counts(torch::zeros({bins}, torch::kLong)),
        lo(torch::full({}, kInf, torch::kDouble)),
        hi(torch::full({}, -kInf, torch::kDouble)) {}
  void add(const Tensor& x) { edgeqat::observe_histogram_(counts, lo, hi, x); }
  std::tuple<Tensor, Tensor> range(const qnn::QuantSpec& spec) const {
    return edgeqat::histogram_range(
        counts, lo, hi, qnn::histogram_method_name(spec.histogram_method()), spec.percentile(),
        spec.num_bits(), spec.narrow_range(), spec.symmetric());
  }
};

std::vector<Tensor> calibration_batches(uint64_t seed) {
  torch::manual_seed(seed);
  // Heavy tails (the case a histogram source is for) and a batch that widens the range.
  return {torch::randn({256}), 0.5 * torch::randn({4, 64}) + 0.25, torch::randn({128}).pow(3),
          4.0 * torch::randn({32})};
}

}  // namespace

// ---------------------------------------------------------------------------
// QuantSpec
// ---------------------------------------------------------------------------

TEST_CASE("histogram QuantSpec: Python's defaults, setters, equality and printing",
          "[nn][histogram][config]") {
  const qnn::QuantSpec spec;
  CHECK(spec.histogram_bins() == 2048);
  CHECK(spec.histogram_method() == qnn::HistogramMethod::Mse);
  CHECK(spec.percentile() == 99.99);

  const auto h = qnn::QuantSpec()
                     .range_source("histogram")
                     .histogram_bins(512)
                     .histogram_method("percentile")
                     .percentile(99.9);
  CHECK(h.range_source() == qnn::RangeSource::Histogram);
  CHECK(std::string(qnn::range_source_name(h.range_source())) == "histogram");
  CHECK(h.histogram_bins() == 512);
  CHECK(h.histogram_method() == qnn::HistogramMethod::Percentile);
  CHECK(std::string(qnn::histogram_method_name(h.histogram_method())) == "percentile");
  CHECK(h.percentile() == 99.9);
  CHECK(h.averaging_constant() == 1.0);
  CHECK(qnn::QuantSpec().histogram_method("mse").histogram_method() == qnn::HistogramMethod::Mse);
  CHECK(qnn::QuantSpec().range_source(qnn::RangeSource::Histogram) ==
        qnn::QuantSpec().range_source("histogram"));
  // Every new field takes part in ==.
  CHECK(qnn::QuantSpec().histogram_bins(1024) != qnn::QuantSpec());
  CHECK(qnn::QuantSpec().histogram_method("percentile") != qnn::QuantSpec());
  CHECK(qnn::QuantSpec().percentile(99.0) != qnn::QuantSpec());
  // Edges are allowed.
  CHECK_NOTHROW(qnn::QuantSpec().histogram_bins(2).histogram_bins(16384));
  CHECK_NOTHROW(qnn::QuantSpec().percentile(50.0).percentile(100.0));
  // A per-channel spec becomes a histogram one once it is per tensor.
  CHECK_NOTHROW(qnn::QConfig::default_weight().per_channel(false).range_source("histogram"));

  std::ostringstream text;
  text << h;
  CHECK_THAT(text.str(), Contains("range_source='histogram'"));
  CHECK_THAT(text.str(),
             Contains("histogram_bins=512, histogram_method='percentile', percentile=99.9)"));
}

TEST_CASE("histogram QuantSpec rejects bad values, naming the field and the value",
          "[nn][histogram][config][errors]") {
  CHECK_THROWS_WITH(qnn::QuantSpec().histogram_bins(1),
                    Contains("QuantSpec.histogram_bins must be an int in [2, 16384], got 1"));
  CHECK_THROWS_WITH(qnn::QuantSpec().histogram_bins(16385), Contains("got 16385"));
  CHECK_THROWS_WITH(
      qnn::QuantSpec().histogram_method("max"),
      Contains("QuantSpec.histogram_method must be 'percentile' or 'mse', got 'max'"));
  CHECK_THROWS_WITH(qnn::QuantSpec().histogram_method(static_cast<qnn::HistogramMethod>(7)),
                    Contains("QuantSpec.histogram_method must be"));
  CHECK_THROWS_WITH(qnn::QuantSpec().percentile(49.5),
                    Contains("QuantSpec.percentile must be in [50, 100], got 49.5"));
  CHECK_THROWS_WITH(qnn::QuantSpec().percentile(100.5), Contains("got 100.5"));
  CHECK_THROWS_WITH(qnn::QuantSpec().percentile(std::nan("")), Contains("QuantSpec.percentile"));
  CHECK_THROWS_WITH(qnn::QuantSpec().range_source(static_cast<qnn::RangeSource>(9)),
                    Contains("RangeSource::Last, Ema, Running or Histogram, got 9"));
  // Per tensor only, whichever setter comes second.
  CHECK_THROWS_WITH(qnn::QConfig::default_weight().range_source("histogram"),
                    Contains("QuantSpec.range_source='histogram' is per tensor only: set "
                             "per_channel=false"));
  CHECK_THROWS_WITH(qnn::QuantSpec().range_source("histogram").per_channel(true),
                    Contains("is per tensor only"));
  CHECK_THROWS_WITH(qnn::QuantSpec().range_source("histogram").per_channel(true),
                    Contains("got per_channel=true"));
  CHECK_THROWS_AS(qnn::QuantSpec().histogram_bins(0), c10::ValueError);
  CHECK_THROWS_AS(qnn::QuantSpec().percentile(10.0), c10::ValueError);
  // A failed setter leaves the spec as it was.
  auto spec = qnn::QuantSpec().range_source("histogram");
  CHECK_THROWS(spec.histogram_bins(1));
  CHECK_THROWS(spec.per_channel(true));
  CHECK_THROWS(spec.percentile(20.0));
  CHECK(spec.histogram_bins() == 2048);
  CHECK_FALSE(spec.per_channel());
  CHECK(spec.percentile() == 99.99);
  // The histogram spec is a valid activation spec.
  CHECK(qnn::QConfig().activation(spec).activation() == spec);
}

// ---------------------------------------------------------------------------
// FakeQuantizer
// ---------------------------------------------------------------------------

TEST_CASE("histogram FakeQuantizer: Python's buffer names, order, shapes and dtypes",
          "[nn][histogram][quantizer]") {
  qnn::FakeQuantizer q{qnn::QuantSpec().range_source("histogram").histogram_bins(300)};
  // Python's registration order (state_dict order).
  CHECK(keys_of(q->named_buffers()) == std::vector<std::string>{"observed_min", "observed_max",
                                                                "mode_code", "histogram",
                                                                "histogram_min", "histogram_max"});
  CHECK(keys_of(q->named_parameters()) == std::vector<std::string>{"learned_min", "learned_max"});
  CHECK(q->histogram.scalar_type() == torch::kLong);
  CHECK(q->histogram.sizes() == torch::IntArrayRef{300});
  CHECK(q->histogram.sum().item<int64_t>() == 0);
  CHECK(q->histogram_min.scalar_type() == torch::kDouble);
  CHECK(q->histogram_min.dim() == 0);
  CHECK(q->histogram_min.item<double>() == kInf);
  CHECK(q->histogram_max.item<double>() == -kInf);
  CHECK(q->observed_min.dim() == 0);
  CHECK_FALSE(q->has_range());

  // Other sources have no histogram buffers.
  qnn::FakeQuantizer ema{qnn::QuantSpec()};
  CHECK(keys_of(ema->named_buffers()) ==
        std::vector<std::string>{"observed_min", "observed_max", "mode_code"});
  CHECK_FALSE(ema->histogram.defined());

  std::ostringstream text;
  q->pretty_print(text);
  CHECK_THAT(text.str(), Contains("range_source='histogram', histogram_bins=300, "
                                  "histogram_method='mse')"));
}

TEST_CASE(
    "histogram FakeQuantizer calibrates in float, and its range is histogram_range's on the "
    "same data, bit for bit",
    "[nn][histogram][quantizer]") {
  const std::vector<qnn::QuantSpec> specs = {
      qnn::QuantSpec().range_source("histogram"),
      qnn::QuantSpec().range_source("histogram").histogram_method("percentile").percentile(99.0),
      qnn::QuantSpec()
          .range_source("histogram")
          .symmetric(true)
          .narrow_range(true)
          .num_bits(4)
          .histogram_bins(128),
      qnn::QuantSpec()
          .range_source("histogram")
          .symmetric(true)
          .histogram_method("percentile")
          .percentile(99.9),
  };
  const auto batches = calibration_batches(21);
  for (const auto& spec : specs) {
    INFO(spec);
    qnn::FakeQuantizer q{spec};
    Reference ref(spec.histogram_bins());
    for (const auto& x : batches) {
      const auto y = q(x);
      CHECK(y.is_same(x));  // calibration runs in float: the very input comes back
      ref.add(x);
      CHECK(same(q->histogram, ref.counts));
      CHECK(same(q->histogram_min, ref.lo));
      CHECK(same(q->histogram_max, ref.hi));
    }
    // Nothing chosen yet, but the histogram counts as a range for the controls.
    CHECK(std::isinf(q->observed_min.item<float>()));
    CHECK(q->has_range());

    q->freeze();
    CHECK(q->mode() == qnn::Mode::Frozen);
    const auto [lo, hi] = ref.range(spec);
    CHECK(same(q->observed_min, lo));
    CHECK(same(q->observed_max, hi));
    // From then on, a fake quantizer like any other: frozen, training or not.
    const auto x = 3.0 * torch::randn({64});
    const auto expected =
        edgeqat::fake_quant_with_min_max_vars(x, lo, hi, spec.num_bits(), spec.narrow_range());
    CHECK(same(q(x), expected));
    q->eval();
    CHECK(same(q(x), expected));
    const auto [qlo, qhi] = q->quant_range();
    CHECK(same(qlo, lo));
    CHECK(same(qhi, hi));
    // select_range() again without new data: the same range.
    const auto [slo, shi] = q->select_range();
    CHECK(same(slo, lo));
    CHECK(same(shi, hi));
  }
}

TEST_CASE("histogram FakeQuantizer chooses its range when first needed, and again after new data",
          "[nn][histogram][quantizer]") {
  const auto spec = qnn::QuantSpec().range_source("histogram");
  const auto batches = calibration_batches(22);
  qnn::FakeQuantizer q{spec};
  Reference ref(spec.histogram_bins());
  q(batches[0]);
  q(batches[1]);
  ref.add(batches[0]);
  ref.add(batches[1]);

  // Eval mode in Observe: the range is chosen now, and used.
  q->eval();
  const auto x = torch::randn({32});
  const auto [lo1, hi1] = ref.range(spec);
  CHECK(same(q(x), edgeqat::fake_quant_with_min_max_vars(x, lo1, hi1)));
  CHECK(same(q->observed_min, lo1));
  CHECK(q->mode() == qnn::Mode::Observe);

  // More data (training mode again): the chosen range is out of date, and
  // observed_range() chooses from the whole histogram.
  q->train();
  CHECK(q(batches[3]).is_same(batches[3]));
  ref.add(batches[3]);
  CHECK(std::isinf(q->observed_min.item<float>()));
  const auto [lo2, hi2] = ref.range(spec);
  REQUIRE_FALSE(same(lo2, lo1));
  const auto [olo, ohi] = q->observed_range();
  CHECK(same(q->observed_min, lo2));
  CHECK(same(q->observed_max, hi2));
  CHECK(same(olo, lo2.clamp_max(0.0)));

  // An empty batch adds nothing and keeps the chosen range.
  q(torch::empty({0}));
  CHECK(same(q->observed_min, lo2));

  // learn() chooses first (after new data), then starts the learned range there.
  q(batches[2]);
  ref.add(batches[2]);
  q->learn();
  const auto [lo3, hi3] = ref.range(spec);
  CHECK(same(q->learned_min.detach(), lo3));
  CHECK(same(q->learned_max.detach(), hi3));
  // Learn mode does not observe: the histogram stays.
  const auto counts = q->histogram.clone();
  const auto y = q(5.0 * x);
  CHECK(same(q->histogram, counts));
  CHECK(same(y, edgeqat::fake_quant_with_min_max_vars(5.0 * x, lo3, hi3)));

  // Off: identity.
  q->disable();
  CHECK(q(x).is_same(x));
}

TEST_CASE("histogram FakeQuantizer: torch::save / torch::load mid-calibration continue identically",
          "[nn][histogram][quantizer][serialize]") {
  const auto spec = qnn::QuantSpec().range_source("histogram").histogram_method("percentile");
  const auto batches = calibration_batches(23);
  qnn::FakeQuantizer q{spec};
  q(batches[0]);
  q(batches[1]);
  const auto path =
      (std::filesystem::temp_directory_path() / "edgeqat_test_histogram_quantizer.pt").string();
  torch::save(q, path);
  qnn::FakeQuantizer restored{spec};
  torch::load(restored, path);
  std::remove(path.c_str());
  CHECK(same(restored->histogram, q->histogram));
  CHECK(same(restored->histogram_min, q->histogram_min));
  CHECK(restored->has_range());  // the loaded histogram is chosen from when needed

  for (size_t i = 2; i < batches.size(); ++i) {
    q(batches[i]);
    restored(batches[i]);
  }
  q->freeze();
  restored->freeze();
  CHECK(same(restored->observed_min, q->observed_min));
  CHECK(same(restored->observed_max, q->observed_max));
  CHECK(same(restored->histogram, q->histogram));
}

TEST_CASE("histogram FakeQuantizer errors name the quantizer and the fix",
          "[nn][histogram][quantizer][errors]") {
  qnn::FakeQuantizer q{qnn::QuantSpec().range_source("histogram")};
  CHECK_THROWS_WITH(q->select_range(),
                    Contains("FakeQuantizer(per-tensor, 8 bits, histogram) has an empty "
                             "histogram: run calibration data through it"));
  q->eval();
  CHECK_THROWS_WITH(q(torch::ones({2})),
                    Contains("FakeQuantizer(per-tensor, 8 bits, histogram) has no observed range "
                             "yet: run calibration data through it in Observe mode"));
  CHECK_THROWS_WITH(q->learn(), Contains("has no observed range yet"));
  CHECK(q->mode() == qnn::Mode::Observe);
  // freeze() without data: nothing to choose, as in Python (the range is still missing).
  q->freeze();
  CHECK(q->mode() == qnn::Mode::Frozen);
  CHECK_THROWS_WITH(q(torch::ones({2})), Contains("has no observed range yet"));

  q->observe();
  q->train();
  CHECK_THROWS_WITH(q->observe_and_quantize(torch::ones({2})),
                    Contains("a histogram source observes in forward()"));
  CHECK_THROWS_WITH(q(torch::tensor({1.0f, std::numeric_limits<float>::infinity()})),
                    Contains("infinite"));

  qnn::FakeQuantizer ema{qnn::QuantSpec()};
  CHECK_THROWS_WITH(ema->select_range(),
                    Contains("FakeQuantizer(per-tensor, 8 bits): select_range() chooses a range "
                             "from a histogram; this quantizer has range_source='ema', not "
                             "'histogram'"));
}

// ---------------------------------------------------------------------------
// Modules and controls
// ---------------------------------------------------------------------------

TEST_CASE("histogram ActQuant / SharedActQuant are the identity while calibrating",
          "[nn][histogram][add]") {
  torch::manual_seed(24);
  const auto config = qnn::QConfig().activation(qnn::QuantSpec().range_source("histogram"));
  qnn::ActQuant source(config, qnn::Activation::ReLU);
  qnn::SharedActQuant shared(source);
  Reference ref(2048);

  const auto x = torch::randn({4, 8, 3, 3});
  const auto y = source(x);
  // ReLU is applied (not fused: the histogram must see relu(x)), no rounding.
  CHECK(same(y, torch::relu(x)));
  ref.add(torch::relu(x));
  CHECK(same(source->quantizer->histogram, ref.counts));
  const auto pooled = y.mean({2, 3});
  CHECK(shared(pooled).is_same(pooled));                  // as the source: float calibration
  CHECK(same(source->quantizer->histogram, ref.counts));  // and never observes

  // The source's range once it is chosen; eval mode chooses it too.
  source->eval();
  const auto [lo, hi] = ref.range(config.activation());
  CHECK(same(shared(3.0 * pooled), edgeqat::fake_quant_with_min_max_vars(3.0 * pooled, lo, hi)));
  source->train();
  qnn::freeze_observers(source);
  CHECK(same(shared(pooled), edgeqat::fake_quant_with_min_max_vars(pooled, lo, hi)));
  CHECK(same(source(x), edgeqat::fake_quant_with_min_max_vars(torch::relu(x), lo, hi)));
}

TEST_CASE("histogram quantizers: the model controls choose the ranges of a calibrated model",
          "[nn][histogram][controls]") {
  torch::manual_seed(25);
  const auto hist = qnn::QuantSpec().range_source("histogram");
  const auto config = qnn::QConfig().activation(hist).weight(
      qnn::QConfig::default_weight().per_channel(false).range_source("histogram"));
  torch::nn::Sequential model(qnn::ActQuant(config),
                              qnn::QuantLinear(qnn::QuantLinearOptions(6, 3).config(config)),
                              qnn::ActQuant(config));
  const auto x = torch::randn({16, 6});
  CHECK_THROWS_WITH(qnn::freeze_observers(model),
                    Contains("have not observed data yet: 0.quantizer, 1.weight_quant, "
                             "2.quantizer"));
  // Calibration: the float model.
  auto* linear = model[1]->as<qnn::QuantLinearImpl>();
  CHECK(same(model->forward(x), torch::linear(x, linear->weight, linear->bias)));
  qnn::freeze_observers(model);
  for (const auto& m : model->modules()) {
    if (auto q = std::dynamic_pointer_cast<qnn::FakeQuantizerImpl>(m)) {
      CHECK(q->mode() == qnn::Mode::Frozen);
      CHECK(q->observed_min.item<float>() <= q->observed_max.item<float>());
    }
  }
  Reference w(2048);
  w.add(linear->weight.detach());
  const auto [wlo, whi] = w.range(linear->weight_quant->spec());  // symmetric, narrow range
  CHECK(same(linear->weight_quant->observed_min, wlo));
  CHECK(same(linear->weight_quant->observed_max, whi));
}
