// Tests of edgeqat::export_int8 (csrc/nn/export.cpp): a small QAT Sequential trained a few SGD
// steps (so ranges and BN statistics are not trivial), BN and observers frozen, eval mode, then
//  - the graph: ops in order, their inputs, the values' shapes and int8 grids (each from the
//    right quantizer's range), conv geometry, pool windows, act_min / act_max from the fused
//    ReLU / ReLU6; the written file holds the module's fake-quantized weights;
//  - errors name the module path and its type.
#include "catch_torch.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <ostream>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "edgeqat/edgeqat.h"
#include "edgeqat/runtime/model.h"
#include "edgeqat/runtime/model_file.h"

namespace {

namespace qnn = edgeqat::nn;
namespace rt = edgeqat::runtime;
using Catch::Contains;
using nlohmann::json;

constexpr int64_t kClasses = 10;

//   0  ActQuant                                       input [3, 16, 16]
//   1  ConvBn2d 3->8 3x3 pad 1 ReLU                   [8, 16, 16]
//   2  ActQuant
//   3  QuantConv2d 8->8 3x3 stride 2 pad 1 depthwise  [8, 8, 8]
//   4  ActQuant
//   5  Residual: body = ConvBn2d 8->16 1x1 ReLU6, ActQuant, ConvBn2d 16->8 3x3 pad 1, ActQuant;
//      identity shortcut; ReLU in the add
//   6  MaxPool2d 2                                    [8, 4, 4]
//   7  AdaptiveAvgPool2d 1                            [8, 1, 1]
//   8  SharedActQuant(5.add.out_quant)
//   9  Flatten                                        [8]
//  10  QuantLinear 8->10
//  11  ActQuant
struct Net {
  torch::nn::Sequential seq;
  qnn::Residual block{nullptr};
};

Net make_net() {
  Net net;
  torch::nn::Sequential body{
      qnn::ConvBn2d(qnn::ConvBn2dOptions(8, 16, 1).activation("relu6")), qnn::ActQuant(),
      qnn::ConvBn2d(qnn::ConvBn2dOptions(16, 8, 3).padding(1)), qnn::ActQuant()};
  net.block = qnn::Residual(body, nullptr, qnn::ResidualOptions().activation("relu"));
  net.seq->push_back(qnn::ActQuant());
  net.seq->push_back(qnn::ConvBn2d(qnn::ConvBn2dOptions(3, 8, 3).padding(1).activation("relu")));
  net.seq->push_back(qnn::ActQuant());
  net.seq->push_back(
      qnn::QuantConv2d(qnn::QuantConv2dOptions(8, 8, 3).stride(2).padding(1).groups(8)));
  net.seq->push_back(qnn::ActQuant());
  net.seq->push_back(net.block);
  net.seq->push_back(torch::nn::MaxPool2d(2));
  net.seq->push_back(torch::nn::AdaptiveAvgPool2d(1));
  net.seq->push_back(qnn::SharedActQuant(net.block->add->out_quant));
  net.seq->push_back(torch::nn::Flatten());
  net.seq->push_back(qnn::QuantLinear(8, kClasses));
  net.seq->push_back(qnn::ActQuant());
  return net;
}

// Class c: a fixed random template plus noise.
std::pair<torch::Tensor, torch::Tensor> batch_of(const torch::Tensor& templates, int64_t n) {
  const auto labels = torch::randint(templates.size(0), {n}, torch::kLong);
  return {templates.index_select(0, labels) + 0.5 * torch::randn({n, 3, 16, 16}), labels};
}

void train(torch::nn::Sequential& seq, const torch::Tensor& templates, int steps) {
  torch::optim::SGD opt(seq->parameters(), torch::optim::SGDOptions(0.05).momentum(0.9));
  seq->train();
  for (int step = 0; step < steps; ++step) {
    if (step == steps * 2 / 3) qnn::freeze_bn(seq);
    auto [x, y] = batch_of(templates, 32);
    opt.zero_grad();
    torch::nn::functional::cross_entropy(seq->forward(x), y).backward();
    opt.step();
  }
  qnn::freeze_observers(seq);
  seq->eval();
}

// The trained model, built once for all the tests.
struct Trained {
  Net net;
  torch::Tensor templates;
};

Trained& trained() {
  static Trained t = [] {
    torch::manual_seed(0);
    Trained r{make_net(), torch::randn({kClasses, 3, 16, 16})};
    train(r.net.seq, r.templates, 45);
    return r;
  }();
  return t;
}

qnn::ActQuantImpl& act_quant(const torch::nn::Sequential& seq, size_t i) {
  return *seq->ptr(i)->as<qnn::ActQuantImpl>();
}

// The int8 grid of an 8-bit asymmetric range, with TensorFlow's nudge written out here.
struct Grid {
  float scale;
  int zero_point;
};
Grid expected_grid(const qnn::FakeQuantizer& q) {
  const auto [lo_t, hi_t] = q->quant_range();
  const float lo = lo_t.item<float>(), hi = hi_t.item<float>();
  const float scale = (hi - lo) / 255.0f;
  const float zp_from_min = 0.0f - lo / scale;
  const float zp = zp_from_min < 0.0f     ? 0.0f
                   : zp_from_min > 255.0f ? 255.0f
                                          : std::round(zp_from_min);
  return {scale, static_cast<int>(zp) - 128};
}

const json& find_named(const json& list, const std::string& name) {
  for (const auto& item : list) {
    if (item["name"] == name) return item;
  }
  FAIL("no entry named " << name);
  static const json none;
  return none;
}

std::string export_error(const torch::nn::Sequential& seq, const torch::Tensor& example) {
  try {
    edgeqat::export_int8_graph(seq, example);
  } catch (const c10::ValueError& e) {
    return e.what_without_backtrace();
  }
  FAIL("export_int8_graph did not throw");
  return {};
}

}  // namespace

TEST_CASE("export_int8: the graph of a trained model", "[export]") {
  auto& t = trained();
  const auto& seq = t.net.seq;
  const auto& body = t.net.block->body;
  const auto builder = edgeqat::export_int8_graph(seq, torch::zeros({2, 3, 16, 16}));
  const json& g = builder.graph();

  CHECK(g["inputs"] == json::array({"input"}));
  CHECK(g["outputs"] == json::array({"10"}));
  // name, op, inputs, output shape
  const std::vector<
      std::tuple<std::string, std::string, std::vector<std::string>, std::vector<int64_t>>>
      expected = {
          {"1", "conv2d", {"input"}, {8, 16, 16}},
          {"3", "conv2d", {"1"}, {8, 8, 8}},
          {"5.body.0", "conv2d", {"3"}, {16, 8, 8}},
          {"5.body.2", "conv2d", {"5.body.0"}, {8, 8, 8}},
          {"5.add", "add", {"5.body.2", "3"}, {8, 8, 8}},
          {"6", "max_pool2d", {"5.add"}, {8, 4, 4}},
          {"7", "average_pool2d", {"6"}, {8, 1, 1}},
          {"9", "flatten", {"7"}, {8}},
          {"10", "fully_connected", {"9"}, {kClasses}},
  };
  REQUIRE(g["nodes"].size() == expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    const auto& [name, op, inputs, shape] = expected[i];
    const json& node = g["nodes"][i];
    INFO("node " << i << " " << node.dump());
    CHECK(node["name"] == name);
    CHECK(node["op"] == op);
    CHECK(node["inputs"] == json(inputs));
    CHECK(node["output"] == name);
    CHECK(find_named(g["values"], name)["shape"] == json(shape));
  }
  CHECK(find_named(g["values"], "input")["shape"] == json({3, 16, 16}));

  // Each value's grid is its quantizer's (pools and flatten keep their input's).
  const std::vector<std::pair<std::string, const qnn::FakeQuantizer*>> grids = {
      {"input", &act_quant(seq, 0).quantizer},
      {"1", &act_quant(seq, 2).quantizer},
      {"3", &act_quant(seq, 4).quantizer},
      {"5.body.0", &act_quant(body, 1).quantizer},
      {"5.body.2", &act_quant(body, 3).quantizer},
      {"5.add", &t.net.block->add->out_quant->quantizer},
      {"6", &t.net.block->add->out_quant->quantizer},
      {"7", &t.net.block->add->out_quant->quantizer},
      {"9", &t.net.block->add->out_quant->quantizer},
      {"10", &act_quant(seq, 11).quantizer},
  };
  for (const auto& [name, q] : grids) {
    INFO("value " << name);
    const json& v = find_named(g["values"], name);
    const Grid want = expected_grid(*q);
    CHECK(v["scale"].get<float>() == Approx(want.scale).epsilon(1e-6));
    CHECK(v["zero_point"] == want.zero_point);
    CHECK(v["qmin"] == -128);
    CHECK(v["qmax"] == 127);
  }

  // Geometry.
  const json& dw = g["nodes"][1];
  CHECK(dw["stride"] == json({2, 2}));
  CHECK(dw["padding"] == json({1, 1, 1, 1}));
  CHECK(dw["dilation"] == json({1, 1}));
  CHECK(dw["groups"] == 8);
  CHECK(g["nodes"][0]["padding"] == json({1, 1, 1, 1}));
  CHECK(g["nodes"][2]["padding"] == json({0, 0, 0, 0}));
  CHECK(g["nodes"][5]["kernel"] == json({2, 2}));
  CHECK(g["nodes"][5]["stride"] == json({2, 2}));
  CHECK(g["nodes"][6]["kernel"] == json({4, 4}));
  CHECK(g["nodes"][6]["stride"] == json({4, 4}));
  CHECK(g["nodes"][6]["padding"] == json({0, 0, 0, 0}));

  // Clamps: ReLU [max(qmin, zp), qmax]; ReLU6 [.., min(qmax, zp + round(6 / scale))]; none
  // [qmin, qmax]. The activation comes from ConvBn2d (1, 5.body.0) or the add (5.add).
  auto clamp_of = [&](const std::string& name) {
    const json& node = find_named(g["nodes"], name);
    return std::make_pair(node["act_min"].get<int>(), node["act_max"].get<int>());
  };
  auto zp_of = [&](const std::string& name) {
    return find_named(g["values"], name)["zero_point"].get<int>();
  };
  auto scale_of = [&](const std::string& name) {
    return find_named(g["values"], name)["scale"].get<float>();
  };
  CHECK(clamp_of("1") == std::make_pair(std::max(-128, zp_of("1")), 127));
  CHECK(clamp_of("3") == std::make_pair(-128, 127));
  const int relu6_top =
      zp_of("5.body.0") + static_cast<int>(std::round(6.0 / scale_of("5.body.0")));
  CHECK(clamp_of("5.body.0") ==
        std::make_pair(std::max(-128, zp_of("5.body.0")), std::min(127, relu6_top)));
  CHECK(clamp_of("5.body.2") == std::make_pair(-128, 127));
  CHECK(clamp_of("5.add") == std::make_pair(std::max(-128, zp_of("5.add")), 127));
  CHECK(clamp_of("10") == std::make_pair(-128, 127));
  // The ReLU layers' ranges start at 0: their zero point is the grid's bottom.
  CHECK(zp_of("1") == -128);
  CHECK(zp_of("5.add") == -128);

  // The weights written are the module's fake-quantized weights (what eval-mode forward uses):
  // q * weight_scale within float rounding of the op's k * scale + nudged_min.
  const auto path = (std::filesystem::temp_directory_path() / "edgeqat_test_export.eq8").string();
  edgeqat::export_int8(seq, torch::zeros({1, 3, 16, 16}), path);
  const rt::ModelFile file = rt::ModelFile::read(path);
  std::filesystem::remove(path);
  CHECK(file.header()["nodes"] == g["nodes"]);
  torch::NoGradGuard no_grad;
  auto check_weights = [&](const std::string& name, const torch::Tensor& fq) {
    INFO("weights of " << name);
    const auto& w = file.constant(name + ".weight");
    // The weight scales are not in the file (the multipliers carry them); the builder has them.
    const std::vector<float>& s = builder.weight_scales().at(name);
    REQUIRE(w.shape == std::vector<int64_t>{fq.size(0), fq.size(2), fq.size(3), fq.size(1)});
    const int8_t* q = w.as<int8_t>();
    const float* scale = s.data();
    const auto f = fq.contiguous();
    const auto a = f.accessor<float, 4>();
    int64_t bad = 0;
    for (int64_t o = 0; o < f.size(0); ++o)
      for (int64_t i = 0; i < f.size(1); ++i)
        for (int64_t h = 0; h < f.size(2); ++h)
          for (int64_t x = 0; x < f.size(3); ++x) {
            const float got = q[((o * f.size(2) + h) * f.size(3) + x) * f.size(1) + i] * scale[o];
            bad += std::fabs(got - a[o][i][h][x]) > 1e-3f * scale[o];
          }
    CHECK(bad == 0);
  };
  auto* stem = seq->ptr(1)->as<qnn::ConvBn2dImpl>();
  check_weights("1", stem->weight_quant(stem->folded_weight_and_bias().first));
  auto* dwc = seq->ptr(3)->as<qnn::QuantConv2dImpl>();
  check_weights("3", dwc->weight_quant(dwc->weight));
  // int32 bias = round(b' / (s_in * s_w)).
  const auto folded_bias = stem->folded_weight_and_bias().second;
  const float* s1 = builder.weight_scales().at("1").data();
  const int32_t* b1 = file.constant("1.bias").as<int32_t>();
  for (int64_t c = 0; c < 8; ++c) {
    const double want = folded_bias[c].item<double>() /
                        (static_cast<double>(scale_of("input")) * static_cast<double>(s1[c]));
    CHECK(std::fabs(b1[c] - want) <= 0.5 + 1e-6);
  }
}

// How far the int8 model's dequantized values are from the float model's fake-quantized ones,
// in steps (LSB) of the value's scale.
struct LsbStats {
  int64_t count = 0, exact = 0, within_1 = 0;
  double max_lsb = 0.0;
};
LsbStats lsb_stats(const std::vector<float>& got, const torch::Tensor& want, float scale) {
  const auto w = want.contiguous();
  REQUIRE(static_cast<int64_t>(got.size()) == w.numel());
  const float* pw = w.data_ptr<float>();
  LsbStats s;
  for (size_t i = 0; i < got.size(); ++i) {
    const double lsb = std::fabs(static_cast<double>(got[i]) - pw[i]) / scale;
    ++s.count;
    s.exact += lsb <= 1e-3;
    s.within_1 += lsb <= 1.0 + 1e-3;
    s.max_lsb = std::max(s.max_lsb, lsb);
  }
  return s;
}

std::ostream& operator<<(std::ostream& os, const LsbStats& s) {
  return os << s.exact << " exact, " << s.within_1 << " within 1 LSB of " << s.count << ", max "
            << s.max_lsb << " LSB";
}

// Children [from, to) of a Sequential applied to x.
torch::Tensor run_children(torch::nn::Sequential& seq, size_t from, size_t to, torch::Tensor x) {
  for (size_t i = from; i < to; ++i)
    x = (seq->begin() + static_cast<std::ptrdiff_t>(i))->forward(x);
  return x;
}

torch::Tensor as_tensor(const std::vector<float>& v, std::vector<int64_t> shape) {
  return torch::from_blob(const_cast<float*>(v.data()), shape).clone();
}

TEST_CASE("export_int8: the int8 model computes the float model", "[export]") {
  // Measured here (seed 0, 45 SGD steps, a batch of 16; "fast" and "reference" kernels alike):
  //   end to end, the logits: 152 / 160 equal, 159 / 160 within 1 LSB, max 2 LSB (checked:
  //   >= 99% within 1, none over 2); top-1 agreement 16 / 16 (checked: >= 90%). On the way a
  //   rounding flip on a coarse grid is several LSB of a finer one: up to 4 LSB at 5.add (whose
  //   scale is ~1/4 of 5.body.2's), 98.7% within 1.
  //   layer by layer (each float layer fed the int8 model's own input): every value within
  //   1 LSB (checked), 99.2% (the 128 pooled values) to 100% equal (checked: >= 98%).
  auto& t = trained();
  auto& seq = t.net.seq;
  auto& body = t.net.block->body;
  const auto path =
      (std::filesystem::temp_directory_path() / "edgeqat_test_export_run.eq8").string();
  edgeqat::export_int8(seq, torch::zeros({1, 3, 16, 16}), path);
  torch::manual_seed(2);
  const int64_t n = 16;
  const auto x = batch_of(t.templates, n).first.contiguous();
  torch::NoGradGuard no_grad;
  const auto logits = seq->forward(x);  // eval mode: the fake-quantized float model

  const std::vector<std::string> values = {"input", "1", "3", "5.body.0", "5.body.2",
                                           "5.add", "6", "7", "9",        "10"};
  for (const char* kernels : {"fast", "reference"}) {
    INFO("kernels " << kernels);
    rt::ModelOptions options;
    options.kernels = kernels;
    rt::Model model = rt::Model::load(path, options);
    const auto out = model.run_float({x.data_ptr<float>()}, n, values);
    REQUIRE(out.size() == 1 + values.size());
    REQUIRE(model.outputs().size() == 1);
    CHECK(model.outputs()[0].name == "10");

    // End to end: >= 99% of the logits within 1 LSB, none over 2; top-1 agreement >= 90%.
    const LsbStats e2e = lsb_stats(out[0], logits, model.outputs()[0].scale);
    const auto got = as_tensor(out[0], {n, kClasses});
    const int64_t agree = got.argmax(1).eq(logits.argmax(1)).sum().item<int64_t>();
    INFO("end to end: " << e2e << ", top-1 agreement " << agree << " / " << n);
    CHECK(static_cast<double>(e2e.within_1) >= 0.99 * static_cast<double>(e2e.count));
    CHECK(e2e.max_lsb <= 2.0 + 1e-3);
    CHECK(static_cast<double>(agree) >= 0.9 * static_cast<double>(n));

    // Layer by layer: each float layer fed the int8 model's (dequantized, on-grid) input.
    std::map<std::string, torch::Tensor> q;
    for (size_t i = 0; i < values.size(); ++i) {
      std::vector<int64_t> shape = model.value(values[i]).shape;
      shape.insert(shape.begin(), n);
      q[values[i]] = as_tensor(out[1 + i], shape);
    }
    const std::vector<std::pair<std::string, torch::Tensor>> layers = {
        {"1", run_children(seq, 1, 3, q["input"])},
        {"3", run_children(seq, 3, 5, q["1"])},
        {"5.body.0", run_children(body, 0, 2, q["3"])},
        {"5.body.2", run_children(body, 2, 4, q["5.body.0"])},
        {"5.add", t.net.block->add->forward(q["5.body.2"], q["3"])},
        {"6", run_children(seq, 6, 7, q["5.add"])},
        {"7", run_children(seq, 7, 9, q["6"])},
        {"9", run_children(seq, 9, 10, q["7"])},
        {"10", run_children(seq, 10, 12, q["9"])},
    };
    for (const auto& [name, want] : layers) {
      const auto it = std::find(values.begin(), values.end(), name);
      const LsbStats s = lsb_stats(out[1 + static_cast<size_t>(it - values.begin())], want,
                                   model.value(name).scale);
      INFO("layer " << name << ": " << s);
      CHECK(s.max_lsb <= 1.0 + 1e-3);
      CHECK(static_cast<double>(s.exact) >= 0.98 * static_cast<double>(s.count));
    }
    // The input quantized like the float model's input quantizer (ties aside).
    CHECK(lsb_stats(out[1], run_children(seq, 0, 1, x), model.value("input").scale).max_lsb <=
          1.0 + 1e-3);
  }
  std::filesystem::remove(path);
}

TEST_CASE("export_int8: errors name the module path and type", "[export]") {
  auto& t = trained();
  const auto x = torch::zeros({1, 3, 16, 16});
  torch::manual_seed(1);

  SECTION("an unsupported module") {
    torch::nn::Sequential seq{qnn::ActQuant(), torch::nn::Sigmoid()};
    seq->train();
    seq->forward(torch::randn({4, 3, 4, 4}));
    const auto msg = export_error(seq, torch::zeros({1, 3, 4, 4}));
    CHECK_THAT(msg, Contains("cannot export module '1' (torch::nn::Sigmoid)"));
    CHECK_THAT(msg, Contains("no such op"));
  }
  SECTION("an unsupported module inside a residual body") {
    torch::nn::Sequential body{torch::nn::ReLU()};
    torch::nn::Sequential seq{qnn::ActQuant(), qnn::Residual(body)};
    seq->train();
    seq->forward(torch::randn({4, 3, 4, 4}));
    CHECK_THAT(export_error(seq, torch::zeros({1, 3, 4, 4})),
               Contains("module '1.body.0' (torch::nn::ReLU)"));
  }
  SECTION("a quantizer without a range") {
    torch::nn::Sequential seq{
        qnn::ActQuant(), qnn::ConvBn2d(qnn::ConvBn2dOptions(3, 4, 3).padding(1)), qnn::ActQuant()};
    const auto msg = export_error(seq, torch::zeros({1, 3, 4, 4}));
    CHECK_THAT(msg, Contains("module '0' (edgeqat::nn::ActQuant)"));
    CHECK_THAT(msg, Contains("has no range"));
  }
  SECTION("a weight quantizer without a range") {
    torch::nn::Sequential seq{qnn::ActQuant(), qnn::QuantLinear(4, 2), qnn::ActQuant()};
    seq->train();
    seq->forward(torch::randn({4, 4}));
    // As a layer never run: nothing observed.
    auto& wq = seq[1]->as<qnn::QuantLinearImpl>()->weight_quant;
    wq->observed_min.fill_(std::numeric_limits<float>::infinity());
    wq->observed_max.fill_(-std::numeric_limits<float>::infinity());
    const auto msg = export_error(seq, torch::zeros({1, 4}));
    CHECK_THAT(msg, Contains("module '1' (edgeqat::nn::QuantLinear)"));
    CHECK_THAT(msg, Contains("weight quantizer has no range"));
  }
  SECTION("a quantizer turned off") {
    auto net = make_net();
    net.seq->train();
    net.seq->forward(torch::randn({2, 3, 16, 16}));
    act_quant(net.block->body, 3).quantizer->disable();
    const auto msg = export_error(net.seq, x);
    CHECK_THAT(msg, Contains("module '5.body.3' (edgeqat::nn::ActQuant)"));
    CHECK_THAT(msg, Contains("turned off"));
  }
  SECTION("a ConvBn2d not followed by an ActQuant") {
    torch::nn::Sequential seq{qnn::ActQuant(),
                              qnn::ConvBn2d(qnn::ConvBn2dOptions(3, 4, 3).padding(1)),
                              torch::nn::MaxPool2d(2), qnn::ActQuant()};
    seq->train();
    seq->forward(torch::randn({4, 3, 4, 4}));
    const auto msg = export_error(seq, torch::zeros({1, 3, 4, 4}));
    CHECK_THAT(msg, Contains("cannot export module '1' (edgeqat::nn::ConvBn2d)"));
    CHECK_THAT(msg, Contains("must go to an ActQuant"));
    CHECK_THAT(msg, Contains("module '2' (torch::nn::MaxPool2d)"));
  }
  SECTION("a layer at the end of the model") {
    torch::nn::Sequential seq{qnn::ActQuant(),
                              qnn::ConvBn2d(qnn::ConvBn2dOptions(3, 4, 3).padding(1))};
    seq->train();
    seq->forward(torch::randn({4, 3, 4, 4}));
    const auto msg = export_error(seq, torch::zeros({1, 3, 4, 4}));
    CHECK_THAT(msg, Contains("module '1' (edgeqat::nn::ConvBn2d)"));
    CHECK_THAT(msg, Contains("the end of the model"));
  }
  SECTION("a builder error gets the module path") {
    // QuantLinear on an image: the builder wants a flattened vector.
    torch::nn::Sequential seq{qnn::ActQuant(), qnn::QuantLinear(4, 2), qnn::ActQuant()};
    seq->train();
    seq->forward(torch::randn({4, 4}));
    const auto msg = export_error(seq, torch::zeros({1, 1, 2, 2}));
    CHECK_THAT(msg, Contains("cannot export module '1' (edgeqat::nn::QuantLinear)"));
    CHECK_THAT(msg, Contains("flatten first"));
  }
  SECTION("pooling the int8 model cannot express") {
    torch::nn::Sequential seq{
        qnn::ActQuant(), torch::nn::AvgPool2d(torch::nn::AvgPool2dOptions(3).stride(1).padding(1))};
    seq->train();
    seq->forward(torch::randn({4, 3, 4, 4}));
    CHECK_THAT(export_error(seq, torch::zeros({1, 3, 4, 4})),
               Contains("module '1' (torch::nn::AvgPool2d): count_include_pad"));
  }
  SECTION("a SharedActQuant not after a pool, or on another grid") {
    qnn::ActQuant source;
    torch::nn::Sequential seq{source, qnn::SharedActQuant(source)};
    seq->train();
    seq->forward(torch::randn({4, 3, 4, 4}));
    CHECK_THAT(export_error(seq, torch::zeros({1, 3, 4, 4})),
               Contains("module '1' (edgeqat::nn::SharedActQuant): a SharedActQuant must come "
                        "right after a pooling module"));
    auto& net = t.net;
    torch::nn::Sequential other{source, torch::nn::MaxPool2d(2),
                                qnn::SharedActQuant(net.block->add->out_quant)};
    CHECK_THAT(export_error(other, torch::zeros({1, 3, 4, 4})),
               Contains("module '2' (edgeqat::nn::SharedActQuant): its source's grid"));
  }
  SECTION("the example input") {
    CHECK_THROWS_AS(edgeqat::export_int8_graph(t.net.seq, torch::zeros({3, 16, 16})),
                    c10::ValueError);
  }
}

TEST_CASE("export_int8: a linked model's simulated bias is the file's int32 bias",
          "[export][bias]") {
  torch::manual_seed(3);
  Net net = make_net();
  auto& seq = net.seq;
  auto& body = net.block->body;
  // Every layer linked to the ActQuant of its input (the 10's is the SharedActQuant's source).
  auto quant = [](const torch::nn::Sequential& s, size_t i) {
    return qnn::ActQuant(s->ptr<qnn::ActQuantImpl>(i));
  };
  seq->ptr<qnn::ConvBn2dImpl>(1)->set_input_quantizer(quant(seq, 0));
  seq->ptr<qnn::QuantConv2dImpl>(3)->set_input_quantizer(quant(seq, 2));
  body->ptr<qnn::ConvBn2dImpl>(0)->set_input_quantizer(quant(seq, 4));
  body->ptr<qnn::ConvBn2dImpl>(2)->set_input_quantizer(quant(body, 1));
  seq->ptr<qnn::QuantLinearImpl>(10)->set_input_quantizer(
      qnn::SharedActQuant(seq->ptr<qnn::SharedActQuantImpl>(8)));
  train(seq, torch::randn({kClasses, 3, 16, 16}), 12);
  const auto builder = edgeqat::export_int8_graph(seq, torch::zeros({1, 3, 16, 16}));
  const json& g = builder.graph();

  // Each layer on a zero input outputs its activation of the bias it adds: float32(bias_q *
  // (double(s_in) * double(s_w[c]))) with the file's bias_q, bit for bit.
  struct Layer {
    std::string name;
    std::shared_ptr<torch::nn::Module> module;
    torch::Tensor zeros;
    qnn::Activation activation;
  };
  const std::vector<Layer> layers{
      {"1", seq->ptr(1), torch::zeros({1, 3, 2, 2}), qnn::Activation::ReLU},
      {"3", seq->ptr(3), torch::zeros({1, 8, 2, 2}), qnn::Activation::Identity},
      {"5.body.0", body->ptr(0), torch::zeros({1, 8, 2, 2}), qnn::Activation::ReLU6},
      {"5.body.2", body->ptr(2), torch::zeros({1, 16, 2, 2}), qnn::Activation::Identity},
      {"10", seq->ptr(10), torch::zeros({1, 8}), qnn::Activation::Identity}};
  torch::NoGradGuard no_grad;
  for (const auto& layer : layers) {
    INFO("layer " << layer.name);
    const json& node = find_named(g["nodes"], layer.name);
    const float s_in = builder.grid_of(node["inputs"][0].get<std::string>()).scale;
    const std::vector<float>& s_w = builder.weight_scales().at(layer.name);
    const rt::ConstantData* bias_q = nullptr;
    for (const auto& c : builder.constants()) {
      if (c.name == layer.name + ".bias") bias_q = &c;
    }
    REQUIRE(bias_q != nullptr);
    REQUIRE(bias_q->dtype == rt::DType::kInt32);
    std::vector<int32_t> q(s_w.size());
    std::memcpy(q.data(), bias_q->bytes.data(), q.size() * sizeof(int32_t));
    auto want = torch::empty({static_cast<int64_t>(q.size())});
    for (size_t c = 0; c < q.size(); ++c) {
      const double s = static_cast<double>(s_in) * static_cast<double>(s_w[c]);
      want[static_cast<int64_t>(c)] = static_cast<float>(q[c] * s);
    }
    if (layer.activation == qnn::Activation::ReLU) want = torch::relu(want);
    if (layer.activation == qnn::Activation::ReLU6) want = torch::clamp(want, 0.0, 6.0);
    torch::Tensor out;
    if (auto* cb = layer.module->as<qnn::ConvBn2dImpl>()) out = cb->forward(layer.zeros);
    if (auto* qc = layer.module->as<qnn::QuantConv2dImpl>()) out = qc->forward(layer.zeros);
    if (auto* ql = layer.module->as<qnn::QuantLinearImpl>()) out = ql->forward(layer.zeros);
    const auto got = out.reshape({1, out.size(1), -1}).select(0, 0).select(1, 0);
    CHECK(torch::equal(got, want));
  }

  // A layer linked to another quantizer than its input's is refused; unlinked it exports.
  seq->ptr<qnn::QuantConv2dImpl>(3)->set_input_quantizer(quant(seq, 11));
  const auto msg = export_error(seq, torch::zeros({1, 3, 16, 16}));
  CHECK_THAT(msg, Contains("cannot export module '3' (edgeqat::nn::QuantConv2d)"));
  CHECK_THAT(msg, Contains("linked input quantizer"));
  seq->ptr<qnn::QuantConv2dImpl>(3)->set_input_quantizer(qnn::ActQuant(nullptr));
  CHECK_NOTHROW(edgeqat::export_int8_graph(seq, torch::zeros({1, 3, 16, 16})));
}

TEST_CASE("export_int8: ceil_mode pools become extra bottom / right padding", "[export]") {
  // 5x5 -> 3x3 by a 2x2 max pool with stride 2 (the last window hangs over), then -> 2x2 by a
  // 2x2 average with stride (1, 2) (its last column hangs over too): the max pool is exact, the
  // average (count_include_pad=false: PyTorch counts the taps inside, as the int8 pool does)
  // within 1 LSB of the simulation.
  torch::manual_seed(3);
  qnn::ActQuant in_quant;
  torch::nn::Sequential seq{
      in_quant, torch::nn::MaxPool2d(torch::nn::MaxPool2dOptions(2).ceil_mode(true)),
      torch::nn::AvgPool2d(
          torch::nn::AvgPool2dOptions(2).stride({1, 2}).ceil_mode(true).count_include_pad(false)),
      qnn::SharedActQuant(in_quant)};
  seq->train();
  for (int i = 0; i < 3; ++i) seq->forward(torch::randn({4, 3, 5, 5}));
  seq->eval();
  const auto builder = edgeqat::export_int8_graph(seq, torch::zeros({1, 3, 5, 5}));
  const json& g = builder.graph();
  REQUIRE(g["nodes"].size() == 2);
  CHECK(g["nodes"][0]["op"] == "max_pool2d");
  CHECK(g["nodes"][0]["padding"] == json({0, 0, 1, 1}));
  CHECK(g["nodes"][1]["op"] == "average_pool2d");
  CHECK(g["nodes"][1]["padding"] == json({0, 0, 0, 1}));

  const auto path =
      (std::filesystem::temp_directory_path() / "edgeqat_test_export_ceil.eq8").string();
  edgeqat::export_int8(seq, torch::zeros({1, 3, 5, 5}), path);
  rt::Model model = rt::Model::load(path);
  const int64_t n = 8;
  const auto x = torch::randn({n, 3, 5, 5}).contiguous();
  torch::NoGradGuard no_grad;
  const auto pooled = run_children(seq, 0, 2, x);
  const auto want = seq->forward(x);
  REQUIRE(want.sizes() == torch::IntArrayRef({n, 3, 2, 2}));
  const auto out = model.run_float({x.data_ptr<float>()}, n, {"1"});
  CHECK(lsb_stats(out[1], pooled, model.value("1").scale).max_lsb == 0.0);
  CHECK(lsb_stats(out[0], want, model.outputs()[0].scale).max_lsb <= 1.0 + 1e-3);
  std::filesystem::remove(path);
}
