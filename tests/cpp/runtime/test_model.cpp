// The int8 interpreter (model.h). Small graphs are written in the test (hand-made JSON and
// constants, through serialize_model_file) and their expected outputs computed by calling the
// reference kernels directly on NHWC tensors (depthwise as a grouped conv, concat and flatten as
// plain loops in NCHW), then compared bit for bit with Model's outputs and captures: for batch 1,
// 3 and 7, every kernel table ("reference", "fast", "fast/<isa>"), 1 and 2 threads. Then every
// load-time rejection (a valid header mutated one field at a time: the error must name the node
// or value and the attribute) and the run-time argument errors.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <map>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "edgeqat/runtime/builder.h"
#include "edgeqat/runtime/fast.h"
#include "edgeqat/runtime/model.h"
#include "edgeqat/runtime/runtime.h"

namespace rt = edgeqat::runtime;
using Catch::Matchers::Contains;
using nlohmann::json;
using rt::QuantizedMultiplier;
using rt::Shape4;

namespace {

// ---- building graphs -----------------------------------------------------------------------

// A value of the graph: one sample's logical shape and its grid.
struct Tv {
  std::string name;
  std::vector<int64_t> shape;
  float scale = 1.0f;
  int32_t zp = 0;
  int32_t qmin = -128, qmax = 127;
  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
  int c() const { return static_cast<int>(shape[0]); }
  int h() const { return shape.size() == 3 ? static_cast<int>(shape[1]) : 1; }
  int w() const { return shape.size() == 3 ? static_cast<int>(shape[2]) : 1; }
};

json value_json(const Tv& v) {
  return {{"name", v.name},     {"shape", v.shape}, {"scale", v.scale},
          {"zero_point", v.zp}, {"qmin", v.qmin},   {"qmax", v.qmax}};
}

json pair_json(QuantizedMultiplier m) { return json::array({m.multiplier, m.shift}); }

std::mt19937& rng() {
  static std::mt19937 gen(20240611);
  return gen;
}
int uniform_int(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng()); }
std::vector<int8_t> random_int8(size_t n, int lo = -128, int hi = 127) {
  std::vector<int8_t> v(n);
  for (auto& x : v) x = static_cast<int8_t>(uniform_int(lo, hi));
  return v;
}

struct Graph {
  std::vector<Tv> values;
  json nodes = json::array();
  std::vector<std::string> inputs, outputs;
  std::vector<rt::ConstantData> constants;

  const Tv& add_value(const Tv& v) {
    values.push_back(v);
    return values.back();
  }
  json graph() const {
    json vs = json::array();
    for (const Tv& v : values) vs.push_back(value_json(v));
    return {{"format", "edgeqat.int8"}, {"producer", "test_model.cpp"}, {"values", vs},
            {"inputs", inputs},         {"outputs", outputs},           {"nodes", nodes}};
  }
};

int out_size(int in, int k, int stride, int dilation, int before, int after) {
  return (in + before + after - ((k - 1) * dilation + 1)) / stride + 1;
}

// A conv layer: what the file holds and what the reference kernel needs.
struct Conv {
  rt::ConvParams p;
  std::vector<QuantizedMultiplier> m;
  Shape4 filter;
  std::vector<int8_t> w;  // OHWI
  std::vector<int32_t> bias;
};

// Appends value `out_name` and a conv2d node (named like its output) reading `in`.
Conv add_conv(Graph& g, const Tv& in, const std::string& out_name, float out_scale, int32_t out_zp,
              int oc, int kh, int kw, int groups, std::array<int, 2> stride, std::array<int, 4> pad,
              std::array<int, 2> dil, rt::Activation act, float weight_scale_max = 0.03f) {
  Conv L;
  const int cg = in.c() / groups;
  L.w = random_int8(static_cast<size_t>(oc) * kh * kw * cg, -127, 127);
  L.bias.resize(oc);
  for (auto& b : L.bias) b = uniform_int(-3000, 3000);
  std::vector<float> ws(oc);
  std::vector<double> wsd(oc);
  for (int c = 0; c < oc; ++c) {
    ws[c] = std::uniform_real_distribution<float>(weight_scale_max / 10, weight_scale_max)(rng());
    wsd[c] = ws[c];
  }
  const auto range = rt::activation_range(act, out_scale, out_zp);
  rt::ConvSetup setup = rt::make_conv_params(in.scale, in.zp, wsd, out_scale, out_zp, range);
  L.p = setup.params;
  L.p.stride_h = stride[0];
  L.p.stride_w = stride[1];
  L.p.padding = {pad[0], pad[1], pad[2], pad[3]};
  L.p.dilation_h = dil[0];
  L.p.dilation_w = dil[1];
  L.p.groups = groups;
  L.m = setup.multipliers;
  L.filter = {oc, kh, kw, cg};
  const int oh = out_size(in.h(), kh, stride[0], dil[0], pad[0], pad[2]);
  const int ow = out_size(in.w(), kw, stride[1], dil[1], pad[1], pad[3]);
  g.add_value({out_name, {oc, oh, ow}, out_scale, out_zp});
  std::vector<int32_t> m0(oc);
  std::vector<int8_t> sh(oc);
  for (int c = 0; c < oc; ++c) {
    m0[c] = L.m[c].multiplier;
    sh[c] = static_cast<int8_t>(L.m[c].shift);
  }
  const std::string& n = out_name;
  g.constants.emplace_back(n + ".weight", std::vector<int64_t>{oc, kh, kw, cg}, L.w);
  g.constants.emplace_back(n + ".bias", std::vector<int64_t>{oc}, L.bias);
  g.constants.emplace_back(n + ".multiplier", std::vector<int64_t>{oc}, m0);
  g.constants.emplace_back(n + ".shift", std::vector<int64_t>{oc}, sh);
  g.nodes.push_back({{"op", "conv2d"},
                     {"name", n},
                     {"inputs", {in.name}},
                     {"output", n},
                     {"weight", n + ".weight"},
                     {"bias", n + ".bias"},
                     {"multiplier", n + ".multiplier"},
                     {"shift", n + ".shift"},
                     {"stride", stride},
                     {"padding", pad},
                     {"dilation", dil},
                     {"groups", groups},
                     {"act_min", L.p.act_min},
                     {"act_max", L.p.act_max}});
  return L;
}

struct Fc {
  rt::FullyConnectedParams p;
  std::vector<QuantizedMultiplier> m;
  std::vector<int8_t> w;
  std::vector<int32_t> bias;
  int in_features = 0, out_features = 0;
};

Fc add_fc(Graph& g, const Tv& in, const std::string& out_name, float out_scale, int32_t out_zp,
          int oc, rt::Activation act) {
  Fc L;
  L.in_features = static_cast<int>(in.numel());
  L.out_features = oc;
  L.w = random_int8(static_cast<size_t>(oc) * L.in_features, -127, 127);
  L.bias.resize(oc);
  for (auto& b : L.bias) b = uniform_int(-3000, 3000);
  std::vector<float> ws(oc);
  std::vector<double> wsd(oc);
  for (int c = 0; c < oc; ++c) {
    ws[c] = std::uniform_real_distribution<float>(0.002f, 0.02f)(rng());
    wsd[c] = ws[c];
  }
  const auto range = rt::activation_range(act, out_scale, out_zp);
  auto setup = rt::make_fully_connected_params(in.scale, in.zp, wsd, out_scale, out_zp, range);
  L.p = setup.params;
  L.m = setup.multipliers;
  g.add_value({out_name, {oc}, out_scale, out_zp});
  std::vector<int32_t> m0(oc);
  std::vector<int8_t> sh(oc);
  for (int c = 0; c < oc; ++c) {
    m0[c] = L.m[c].multiplier;
    sh[c] = static_cast<int8_t>(L.m[c].shift);
  }
  const std::string& n = out_name;
  g.constants.emplace_back(n + ".weight", std::vector<int64_t>{oc, L.in_features}, L.w);
  g.constants.emplace_back(n + ".bias", std::vector<int64_t>{oc}, L.bias);
  g.constants.emplace_back(n + ".multiplier", std::vector<int64_t>{oc}, m0);
  g.constants.emplace_back(n + ".shift", std::vector<int64_t>{oc}, sh);
  g.nodes.push_back({{"op", "fully_connected"},
                     {"name", n},
                     {"inputs", {in.name}},
                     {"output", n},
                     {"weight", n + ".weight"},
                     {"bias", n + ".bias"},
                     {"multiplier", n + ".multiplier"},
                     {"shift", n + ".shift"},
                     {"act_min", L.p.act_min},
                     {"act_max", L.p.act_max}});
  return L;
}

rt::AddParams add_add(Graph& g, const Tv& a, const Tv& b, const std::string& out_name,
                      float out_scale, int32_t out_zp, rt::Activation act) {
  const auto range = rt::activation_range(act, out_scale, out_zp);
  rt::AddParams p =
      rt::make_add_params(a.scale, a.zp, b.scale, b.zp, out_scale, out_zp, range.min, range.max);
  g.add_value({out_name, a.shape, out_scale, out_zp});
  g.nodes.push_back({{"op", "add"},
                     {"name", out_name},
                     {"inputs", {a.name, b.name}},
                     {"output", out_name},
                     {"left_shift", p.left_shift},
                     {"input1_multiplier", pair_json(p.input1_multiplier)},
                     {"input2_multiplier", pair_json(p.input2_multiplier)},
                     {"output_multiplier", pair_json(p.output_multiplier)},
                     {"act_min", p.act_min},
                     {"act_max", p.act_max}});
  return p;
}

rt::PoolParams add_pool(Graph& g, const char* op, const Tv& in, const std::string& out_name,
                        std::array<int, 2> k, std::array<int, 2> s, std::array<int, 4> pad) {
  rt::PoolParams p;
  p.filter_h = k[0];
  p.filter_w = k[1];
  p.stride_h = s[0];
  p.stride_w = s[1];
  p.padding = {pad[0], pad[1], pad[2], pad[3]};
  p.act_min = in.qmin;
  p.act_max = in.qmax;
  const int oh = out_size(in.h(), k[0], s[0], 1, pad[0], pad[2]);
  const int ow = out_size(in.w(), k[1], s[1], 1, pad[1], pad[3]);
  g.add_value({out_name, {in.c(), oh, ow}, in.scale, in.zp, in.qmin, in.qmax});
  g.nodes.push_back({{"op", op},
                     {"name", out_name},
                     {"inputs", {in.name}},
                     {"output", out_name},
                     {"kernel", k},
                     {"stride", s},
                     {"padding", pad}});
  return p;
}

void add_flatten(Graph& g, const Tv& in, const std::string& out_name) {
  g.add_value({out_name, {in.numel()}, in.scale, in.zp, in.qmin, in.qmax});
  g.nodes.push_back(
      {{"op", "flatten"}, {"name", out_name}, {"inputs", {in.name}}, {"output", out_name}});
}

// ---- expected results: reference kernels on NHWC --------------------------------------------

// n samples of `v`, NHWC.
struct T8 {
  Shape4 s;
  std::vector<int8_t> d;
};

T8 to_nhwc(const std::vector<int8_t>& x, int n, const Tv& v) {
  T8 t{{n, v.h(), v.w(), v.c()}, std::vector<int8_t>(x.size())};
  for (int b = 0; b < n; ++b)
    for (int c = 0; c < v.c(); ++c)
      for (int y = 0; y < v.h(); ++y)
        for (int x0 = 0; x0 < v.w(); ++x0)
          t.d[((static_cast<size_t>(b) * v.h() + y) * v.w() + x0) * v.c() + c] =
              x[((static_cast<size_t>(b) * v.c() + c) * v.h() + y) * v.w() + x0];
  return t;
}

std::vector<int8_t> to_nchw(const T8& t) {
  const Shape4& s = t.s;
  std::vector<int8_t> x(t.d.size());
  for (int b = 0; b < s.n; ++b)
    for (int c = 0; c < s.c; ++c)
      for (int y = 0; y < s.h; ++y)
        for (int x0 = 0; x0 < s.w; ++x0)
          x[((static_cast<size_t>(b) * s.c + c) * s.h + y) * s.w + x0] =
              t.d[((static_cast<size_t>(b) * s.h + y) * s.w + x0) * s.c + c];
  return x;
}

T8 run_conv(const Conv& L, const T8& x) {
  const int oh = rt::window_output_size(x.s.h, L.filter.h, L.p.stride_h, L.p.dilation_h,
                                        L.p.padding.top, L.p.padding.bottom, "test", "h");
  const int ow = rt::window_output_size(x.s.w, L.filter.w, L.p.stride_w, L.p.dilation_w,
                                        L.p.padding.left, L.p.padding.right, "test", "w");
  T8 y{{x.s.n, oh, ow, L.filter.n}, {}};
  y.d.resize(static_cast<size_t>(rt::num_elements(y.s)));
  // Always the grouped conv, depthwise included: checks the runtime's depthwise repacking.
  rt::reference::conv2d(nullptr, L.p, L.m.data(), x.s, x.d.data(), L.filter, L.w.data(),
                        L.bias.data(), y.s, y.d.data());
  return y;
}

T8 run_fc(const Fc& L, const T8& x) {
  T8 y{{x.s.n, 1, 1, L.out_features}, {}};
  y.d.resize(static_cast<size_t>(x.s.n) * L.out_features);
  rt::reference::fully_connected(nullptr, L.p, L.m.data(), {x.s.n, L.in_features, L.out_features},
                                 x.d.data(), L.w.data(), L.bias.data(), y.d.data());
  return y;
}

T8 run_add(const rt::AddParams& p, const T8& a, const T8& b) {
  T8 y{a.s, std::vector<int8_t>(a.d.size())};
  rt::reference::add(nullptr, p, a.d.size(), a.d.data(), b.d.data(), y.d.data());
  return y;
}

T8 run_pool(bool max, const rt::PoolParams& p, const T8& x) {
  const int oh = rt::window_output_size(x.s.h, p.filter_h, p.stride_h, 1, p.padding.top,
                                        p.padding.bottom, "test", "h");
  const int ow = rt::window_output_size(x.s.w, p.filter_w, p.stride_w, 1, p.padding.left,
                                        p.padding.right, "test", "w");
  T8 y{{x.s.n, oh, ow, x.s.c}, {}};
  y.d.resize(static_cast<size_t>(rt::num_elements(y.s)));
  if (max) {
    rt::reference::max_pool2d(nullptr, p, x.s, x.d.data(), y.s, y.d.data());
  } else {
    rt::reference::average_pool2d(nullptr, p, x.s, x.d.data(), y.s, y.d.data());
  }
  return y;
}

// Flatten in PyTorch order: the NCHW bytes of each sample, as [n, 1, 1, c * h * w].
T8 run_flatten(const T8& x) { return {{x.s.n, 1, 1, x.s.c * x.s.h * x.s.w}, to_nchw(x)}; }

// Every value of a graph, logical (N, C, H, W) layout, by name.
using Values = std::map<std::string, std::vector<int8_t>>;

// A test graph with its expected evaluation.
struct Case {
  Graph g;
  std::function<Values(const std::vector<std::vector<int8_t>>&, int)> expected;
};

// x [3, 8, 8] -> conv 3x3 + ReLU -> depthwise 3x3 -> add (residual) + ReLU -> global average
// pool -> flatten -> fully connected.
Case main_case() {
  Case k;
  Graph& g = k.g;
  const Tv x = g.add_value({"x", {3, 8, 8}, 0.02f, -3});
  g.inputs = {"x"};
  Conv c1 = add_conv(g, x, "block.conv1", 0.05f, -20, 8, 3, 3, 1, {1, 1}, {1, 1, 1, 1}, {1, 1},
                     rt::Activation::kRelu);
  const Tv v1 = g.values.back();
  Conv dw = add_conv(g, v1, "block.dw", 0.04f, 5, 8, 3, 3, 8, {1, 1}, {1, 1, 1, 1}, {1, 1},
                     rt::Activation::kNone, 0.08f);
  const Tv v2 = g.values.back();
  rt::AddParams ap = add_add(g, v1, v2, "block.add", 0.07f, -2, rt::Activation::kRelu);
  const Tv v3 = g.values.back();
  rt::PoolParams gap = add_pool(g, "average_pool2d", v3, "gap", {8, 8}, {1, 1}, {0, 0, 0, 0});
  const Tv v4 = g.values.back();
  add_flatten(g, v4, "flatten");
  const Tv v5 = g.values.back();
  Fc fc = add_fc(g, v5, "fc", 0.1f, 0, 5, rt::Activation::kNone);
  g.outputs = {"fc"};
  k.expected = [=](const std::vector<std::vector<int8_t>>& in, int n) {
    Values r;
    const T8 t0 = to_nhwc(in[0], n, x);
    const T8 t1 = run_conv(c1, t0);
    const T8 t2 = run_conv(dw, t1);
    const T8 t3 = run_add(ap, t1, t2);
    const T8 t4 = run_pool(false, gap, t3);
    const T8 t5 = run_flatten(t4);
    const T8 t6 = run_fc(fc, t5);
    r["x"] = in[0];
    r["block.conv1"] = to_nchw(t1);
    r["block.dw"] = to_nchw(t2);
    r["block.add"] = to_nchw(t3);
    r["gap"] = to_nchw(t4);
    r["flatten"] = t5.d;
    r["fc"] = t6.d;
    return r;
  };
  return k;
}

// x [4, 9, 9] -> depthwise (multiplier 2, dilation 2) + ReLU6 -> grouped conv (groups 2,
// stride 2, asymmetric padding) -> max pool 3x3 / 2 padded -> flatten (non-trivial order) -> fc.
Case pool_case() {
  Case k;
  Graph& g = k.g;
  const Tv x = g.add_value({"x", {4, 9, 9}, 0.03f, 10});
  g.inputs = {"x"};
  Conv dw = add_conv(g, x, "dw2", 0.05f, -7, 8, 3, 3, 4, {1, 1}, {2, 2, 2, 2}, {2, 2},
                     rt::Activation::kRelu6, 0.1f);
  const Tv v1 = g.values.back();
  Conv gc = add_conv(g, v1, "gconv", 0.06f, 3, 6, 3, 3, 2, {2, 2}, {1, 1, 0, 0}, {1, 1},
                     rt::Activation::kNone);
  const Tv v2 = g.values.back();
  rt::PoolParams mp = add_pool(g, "max_pool2d", v2, "mp", {3, 3}, {2, 2}, {1, 1, 1, 1});
  const Tv v3 = g.values.back();
  add_flatten(g, v3, "flat");
  const Tv v4 = g.values.back();
  Fc fc = add_fc(g, v4, "head", 0.08f, -10, 3, rt::Activation::kRelu);
  g.outputs = {"head"};
  k.expected = [=](const std::vector<std::vector<int8_t>>& in, int n) {
    Values r;
    const T8 t1 = run_conv(dw, to_nhwc(in[0], n, x));
    const T8 t2 = run_conv(gc, t1);
    const T8 t3 = run_pool(true, mp, t2);
    const T8 t4 = run_flatten(t3);
    r["x"] = in[0];
    r["dw2"] = to_nchw(t1);
    r["gconv"] = to_nchw(t2);
    r["mp"] = to_nchw(t3);
    r["flat"] = t4.d;
    r["head"] = run_fc(fc, t4).d;
    return r;
  };
  return k;
}

// Two inputs a [2, 4, 4], b [3, 4, 4] with different grids; outputs: concat(a, b) requantized
// to its own grid and clamped to [-100, 100], and a padded 3x3 average pool of b.
Case concat_case() {
  Case k;
  Graph& g = k.g;
  const Tv a = g.add_value({"a", {2, 4, 4}, 0.05f, 3});
  const Tv b = g.add_value({"b", {3, 4, 4}, 0.1f, -5});
  g.inputs = {"a", "b"};
  const Tv cat = g.add_value({"cat", {5, 4, 4}, 0.08f, 1});
  const QuantizedMultiplier ma = rt::quantize_multiplier(double{a.scale} / cat.scale);
  const QuantizedMultiplier mb = rt::quantize_multiplier(double{b.scale} / cat.scale);
  g.nodes.push_back({{"op", "concat"},
                     {"name", "cat"},
                     {"inputs", {"a", "b"}},
                     {"output", "cat"},
                     {"multipliers", {pair_json(ma), pair_json(mb)}},
                     {"act_min", -100},
                     {"act_max", 100}});
  rt::PoolParams ap = add_pool(g, "average_pool2d", b, "pool_b", {3, 3}, {1, 1}, {1, 1, 1, 1});
  g.outputs = {"cat", "pool_b"};
  k.expected = [=](const std::vector<std::vector<int8_t>>& in, int n) {
    Values r;
    r["a"] = in[0];
    r["b"] = in[1];
    // Concat in NCHW: per sample, a's channels then b's, each requantized (integer formula).
    std::vector<int8_t> c;
    for (int s = 0; s < n; ++s) {
      const std::pair<const Tv*, QuantizedMultiplier> parts[2] = {{&a, ma}, {&b, mb}};
      for (const auto& [v, m] : parts) {
        const int64_t len = v->numel();
        for (int64_t i = 0; i < len; ++i) {
          const int q = in[v == &a ? 0 : 1][static_cast<size_t>(s * len + i)];
          int64_t o = int64_t{rt::multiply_by_quantized_multiplier(q - v->zp, m)} + cat.zp;
          c.push_back(static_cast<int8_t>(std::min<int64_t>(100, std::max<int64_t>(-100, o))));
        }
      }
    }
    r["cat"] = c;
    r["pool_b"] = to_nchw(run_pool(false, ap, to_nhwc(in[1], n, b)));
    return r;
  };
  return k;
}

// A vector input x [16] (no layout change: the runtime reads the caller's memory) -> fc; the
// input is also listed as an output.
Case vector_case() {
  Case k;
  Graph& g = k.g;
  const Tv x = g.add_value({"x", {16}, 0.04f, -1});
  g.inputs = {"x"};
  Fc fc = add_fc(g, x, "fc", 0.05f, 2, 4, rt::Activation::kNone);
  g.outputs = {"fc", "x"};
  k.expected = [=](const std::vector<std::vector<int8_t>>& in, int n) {
    Values r;
    r["x"] = in[0];
    r["fc"] = run_fc(fc, to_nhwc(in[0], n, x)).d;
    return r;
  };
  return k;
}

// The run calls take one pointer per input.
template <class T>
std::vector<const T*> ptrs(const std::vector<std::vector<T>>& v) {
  std::vector<const T*> p;
  for (const auto& x : v) p.push_back(x.data());
  return p;
}

std::vector<uint8_t> bytes_of(const json& graph, const std::vector<rt::ConstantData>& constants) {
  return rt::serialize_model_file(graph, constants);
}

rt::Model load(const json& graph, const std::vector<rt::ConstantData>& constants,
               const rt::ModelOptions& options = {}) {
  const std::vector<uint8_t> b = bytes_of(graph, constants);
  return rt::Model::from_file(rt::ModelFile::parse(b.data(), b.size(), "test.eq8"), options);
}

std::vector<std::vector<int8_t>> random_inputs(const Graph& g, int batch) {
  std::vector<std::vector<int8_t>> in;
  for (const std::string& name : g.inputs) {
    for (const Tv& v : g.values) {
      if (v.name == name) in.push_back(random_int8(static_cast<size_t>(batch * v.numel())));
    }
  }
  return in;
}

// Every kernel table: the reference, "fast", and each ISA of this build and CPU.
std::vector<std::string> kernel_names() {
  std::vector<std::string> names{"reference", "fast"};
  for (const std::string& isa : rt::fast::available_isas()) names.push_back("fast/" + isa);
  return names;
}

// Runs `k` on random inputs and compares outputs, then every value as a capture.
void check_case(const Case& k, rt::Model& model, int batch) {
  const auto in = random_inputs(k.g, batch);
  const Values want = k.expected(in, batch);
  std::vector<std::string> capture;
  for (const Tv& v : k.g.values) capture.push_back(v.name);
  const auto got = model.run_int8(ptrs(in), batch, capture);
  REQUIRE(got.size() == k.g.outputs.size() + capture.size());
  for (size_t i = 0; i < got.size(); ++i) {
    const std::string& name =
        i < k.g.outputs.size() ? k.g.outputs[i] : capture[i - k.g.outputs.size()];
    INFO("value " << name << ", batch " << batch << ", kernels " << model.kernels() << ", threads "
                  << model.num_threads());
    REQUIRE(want.count(name) == 1);
    CHECK(got[i] == want.at(name));
  }
}

}  // namespace

// ---- running ----------------------------------------------------------------------------------

TEST_CASE("model: conv / ReLU / depthwise / residual add / global pool / flatten / fc", "[model]") {
  const Case k = main_case();
  rt::Model model = load(k.g.graph(), k.g.constants, {1, "reference"});
  CHECK(model.kernels() == "reference");
  CHECK(model.node_names() ==
        std::vector<std::string>{"block.conv1", "block.dw", "block.add", "gap", "flatten", "fc"});
  REQUIRE(model.inputs().size() == 1);
  CHECK(model.inputs()[0].name == "x");
  CHECK(model.inputs()[0].shape == std::vector<int64_t>{3, 8, 8});
  CHECK(model.inputs()[0].scale == 0.02f);
  CHECK(model.inputs()[0].zero_point == -3);
  CHECK(model.outputs()[0].name == "fc");
  CHECK(model.outputs()[0].numel() == 5);
  CHECK(model.value("block.dw").zero_point == 5);
  CHECK(model.nodes()[2].op == "add");
  CHECK(model.nodes()[2].inputs == std::vector<std::string>{"block.conv1", "block.dw"});
  CHECK(model.has_value("gap"));
  CHECK_FALSE(model.has_value("nope"));
  CHECK_THROWS_AS(model.value("nope"), std::invalid_argument);
  CHECK(model.activation_bytes() == 0);
  // Batches 1, 3, 7, then 3 again (a new plan, then the same one).
  for (int batch : {1, 3, 7, 3, 3}) check_case(k, model, batch);
  CHECK(model.activation_bytes() > 0);
}

TEST_CASE("model: depthwise multiplier 2, grouped conv, max pool, flatten order", "[model]") {
  const Case k = pool_case();
  rt::Model model = load(k.g.graph(), k.g.constants, {1, "reference"});
  for (int batch : {1, 3, 7}) check_case(k, model, batch);
}

TEST_CASE("model: a batch larger than max_batch_chunk runs in chunks", "[model]") {
  for (const auto& make : {main_case, concat_case}) {
    const Case k = make();
    rt::ModelOptions options;
    options.kernels = "reference";
    options.max_batch_chunk = 3;
    rt::Model model = load(k.g.graph(), k.g.constants, options);
    check_case(k, model, 2);
    const size_t two = model.activation_bytes();
    check_case(k, model, 7);  // chunks of 3, 3, 1
    CHECK(model.activation_bytes() > two);
    const size_t three = model.activation_bytes();
    check_case(k, model, 30);
    CHECK(model.activation_bytes() == three);
  }
  rt::ModelOptions bad;
  bad.max_batch_chunk = -1;
  CHECK_THROWS_WITH(load(main_case().g.graph(), main_case().g.constants, bad),
                    Contains("max_batch_chunk must be >= 0, got -1"));
}

TEST_CASE("model: concat with different input scales; two inputs, two outputs", "[model]") {
  const Case k = concat_case();
  rt::Model model = load(k.g.graph(), k.g.constants, {1, "reference"});
  REQUIRE(model.inputs().size() == 2);
  REQUIRE(model.outputs().size() == 2);
  CHECK(model.outputs()[1].name == "pool_b");
  for (int batch : {1, 3, 7}) check_case(k, model, batch);
}

TEST_CASE("model: vector input read in place, input listed as output", "[model]") {
  const Case k = vector_case();
  rt::Model model = load(k.g.graph(), k.g.constants);
  for (int batch : {1, 3, 7}) check_case(k, model, batch);
}

TEST_CASE("model: every kernel table and thread count gives the same bits", "[model]") {
  for (const auto& make : {main_case, pool_case, concat_case, vector_case}) {
    const Case k = make();
    for (const std::string& kernels : kernel_names()) {
      rt::Model model = load(k.g.graph(), k.g.constants, {1, kernels});
      if (kernels != "reference") CHECK(model.kernels().rfind("fast/", 0) == 0);
      for (int threads : {1, 2}) {
        model.set_num_threads(threads);
        CHECK(model.num_threads() == threads);
        check_case(k, model, 3);
        check_case(k, model, 7);
      }
    }
  }
}

TEST_CASE("model: run_float is quantize, run_int8, dequantize", "[model]") {
  for (const auto& make : {main_case, concat_case}) {
    const Case k = make();
    for (const char* kernels : {"reference", "fast"}) {
      rt::Model model = load(k.g.graph(), k.g.constants, {2, kernels});
      const int batch = 3;
      std::vector<std::vector<float>> xf;
      std::vector<std::vector<int8_t>> xq;
      for (const rt::ValueInfo& info : model.inputs()) {
        std::vector<float> x(static_cast<size_t>(batch * info.numel()));
        std::uniform_real_distribution<float> dist(-8.0f, 8.0f);
        for (float& v : x) v = dist(rng());
        x[0] = 2.5f * info.scale;  // an exact tie: half to even
        x[1] = std::numeric_limits<float>::quiet_NaN();
        x[2] = -std::numeric_limits<float>::infinity();
        std::vector<int8_t> q(x.size());
        rt::reference::quantize(nullptr, {info.scale, info.zero_point}, x.size(), x.data(),
                                q.data());
        xf.push_back(std::move(x));
        xq.push_back(std::move(q));
      }
      const std::vector<std::string> capture{model.values().back().name};
      const auto got = model.run_float(ptrs(xf), batch, capture);
      const auto want_q = model.run_int8(ptrs(xq), batch, capture);
      REQUIRE(got.size() == want_q.size());
      for (size_t i = 0; i < got.size(); ++i) {
        const rt::ValueInfo& info = i < model.outputs().size()
                                        ? model.outputs()[i]
                                        : model.value(capture[i - model.outputs().size()]);
        std::vector<float> want(want_q[i].size());
        rt::reference::dequantize(nullptr, {info.scale, info.zero_point}, want.size(),
                                  want_q[i].data(), want.data());
        CHECK(got[i] == want);
      }
    }
  }
}

TEST_CASE("model: a 200-node graph loads and runs; liveness keeps the arena small", "[model]") {
  Graph g;
  const Tv x = g.add_value({"x", {4, 5, 5}, 0.05f, 0});
  g.inputs = {"x"};
  std::vector<Conv> layers;
  Tv prev = x;
  for (int i = 0; i < 200; ++i) {
    layers.push_back(add_conv(g, prev, "layer" + std::to_string(i), 0.05f, 0, 4, 3, 3,
                              i % 2 ? 4 : 1, {1, 1}, {1, 1, 1, 1}, {1, 1}, rt::Activation::kNone,
                              0.02f));
    prev = g.values.back();
  }
  g.outputs = {prev.name};
  for (const char* kernels : {"reference", "fast"}) {
    rt::Model model = load(g.graph(), g.constants, {1, kernels});
    REQUIRE(model.nodes().size() == 200);
    const int batch = 2;
    const auto in = random_inputs(g, batch);
    T8 t = to_nhwc(in[0], batch, x);
    for (const Conv& L : layers) t = run_conv(L, t);
    const auto got = model.run_int8(ptrs(in), batch);
    CHECK(got[0] == to_nchw(t));
    // One 64-byte-aligned slot of batch * 100 bytes per value: 201 values, at most 2 alive at
    // once (3 allowed for the planner's greed).
    CHECK(model.activation_bytes() <= 3 * 256);
  }
}

TEST_CASE("model: a GraphBuilder file loads and runs the same on every kernel table", "[model]") {
  // The exporter's graph (builder.h) against this loader: every op it writes.
  rt::GraphBuilder b("test_model.cpp");
  const std::string x = b.add_input("x", {2, 6, 6}, {-1.0f, 1.0f});
  std::vector<float> w1(4 * 2 * 3 * 3), w2(4 * 1 * 3 * 3), w3(3 * 36), bias(4);
  std::uniform_real_distribution<float> dist(-0.5f, 0.5f);
  for (auto* v : {&w1, &w2, &w3, &bias}) {
    for (float& f : *v) f = dist(rng());
  }
  rt::ConvLayer c1{"c1", {4, 2, 3, 3}, w1.data(), bias.data(), {-0.5f}, {0.5f}};
  c1.padding = {1, 1, 1, 1};
  c1.activation = rt::Activation::kRelu;
  const std::string y1 = b.add_conv2d(c1, x, {0.0f, 2.0f});
  rt::ConvLayer c2{"c2", {4, 1, 3, 3}, w2.data(), nullptr, {-0.5f}, {0.5f}};  // depthwise
  c2.padding = {1, 1, 1, 1};
  c2.groups = 4;
  const std::string y2 = b.add_conv2d(c2, y1, {-1.5f, 1.5f});
  const std::string y3 = b.add_add("res", y1, y2, rt::Activation::kNone, {-2.0f, 3.0f});
  const std::string y4 = b.add_max_pool2d("mp", y3, {2, 2}, {2, 2}, {0, 0, 0, 0});
  const std::string y5 = b.add_average_pool2d("ap", y3, {3, 3}, {2, 2}, {1, 1, 0, 0});
  const std::string y6 = b.add_concat("cat", {y4, y5}, {-2.0f, 3.0f});
  const std::string y7 = b.add_flatten("flat", y4);
  rt::LinearLayer fc{"fc", {3, 36}, w3.data(), nullptr, {-0.5f}, {0.5f}};
  const std::string y8 = b.add_fully_connected(fc, y7, {-4.0f, 4.0f});
  b.mark_output(y8);
  b.mark_output(y6);
  const std::vector<uint8_t> bytes = b.serialize();
  const std::vector<int8_t> in = random_int8(5 * 72);
  std::vector<std::vector<int8_t>> first;
  for (const std::string& kernels : kernel_names()) {
    rt::ModelOptions options;
    options.kernels = kernels;
    rt::Model model =
        rt::Model::from_file(rt::ModelFile::parse(bytes.data(), bytes.size()), options);
    CHECK(model.source() == "<memory>");
    const auto got = model.run_int8({in.data()}, 5, {"c1", "c2", "res", "ap"});
    REQUIRE(got.size() == 6);
    CHECK(got[0].size() == 5 * 3);
    CHECK(got[1].size() == 5 * 8 * 3 * 3);
    if (first.empty()) {
      first = got;
    } else {
      CHECK(got == first);
    }
  }
}

TEST_CASE("model: load from a path, move", "[model]") {
  const Case k = main_case();
  char dir_template[] = "/tmp/edgeqat_test_model_XXXXXX";
  REQUIRE(mkdtemp(dir_template) != nullptr);
  const std::string path = std::string(dir_template) + "/m.eq8";
  rt::write_model_file(path, k.g.graph(), k.g.constants);
  rt::Model model = rt::Model::load(path);
  CHECK(model.source() == path);
  rt::Model moved = std::move(model);
  check_case(k, moved, 2);
  rt::Model other = load(vector_case().g.graph(), vector_case().g.constants);
  other = std::move(moved);
  check_case(k, other, 1);
  std::remove(path.c_str());
  rmdir(dir_template);
  CHECK_THROWS_AS(rt::Model::load(path), rt::ModelFileError);
}

TEST_CASE("model: options and run arguments are checked", "[model][errors]") {
  const Case k = concat_case();
  CHECK_THROWS_WITH(
      load(k.g.graph(), k.g.constants, {1, "turbo"}),
      Contains("unknown kernels 'turbo'") && Contains("reference") && Contains("fast/portable"));
  CHECK_THROWS_AS(load(k.g.graph(), k.g.constants, {1, "fast/nope"}), std::invalid_argument);
  CHECK_THROWS_WITH(load(k.g.graph(), k.g.constants, {0, "fast"}), Contains("num_threads"));
  rt::Model model = load(k.g.graph(), k.g.constants);
  CHECK_THROWS_AS(model.set_num_threads(0), std::invalid_argument);
  const auto in = random_inputs(k.g, 2);
  CHECK_THROWS_WITH(model.run_int8({in[0].data()}, 2), Contains("expected 2 input(s), got 1"));
  CHECK_THROWS_WITH(model.run_int8(ptrs(in), 0), Contains("batch must be >= 1"));
  CHECK_THROWS_WITH(model.run_int8(ptrs(in), 2, {"nope"}),
                    Contains("capture names no value: 'nope'"));
  CHECK_THROWS_WITH(model.run_int8(std::vector<const int8_t*>{in[0].data(), nullptr}, 2),
                    Contains("inputs[1] ('b') is null"));
  CHECK_THROWS_WITH(model.run_float(std::vector<const float*>{nullptr}, 1),
                    Contains("expected 2 input(s)"));
  CHECK_THROWS_WITH(model.run_int8(ptrs(in), int64_t{1} << 60),
                    Contains("batch 1152921504606846976 is too large"));
  // Still runs after the errors.
  check_case(k, model, 2);
}

// ---- load-time rejections -------------------------------------------------------------------

namespace {

json& node_named(json& graph, const std::string& name) {
  for (json& n : graph["nodes"]) {
    if (n["name"] == name) return n;
  }
  throw std::logic_error("no node " + name);
}
json& value_named(json& graph, const std::string& name) {
  for (json& v : graph["values"]) {
    if (v["name"] == name) return v;
  }
  throw std::logic_error("no value " + name);
}

rt::ConstantData& constant_named(std::vector<rt::ConstantData>& cs, const std::string& name) {
  for (rt::ConstantData& c : cs) {
    if (c.name == name) return c;
  }
  throw std::logic_error("no constant " + name);
}

// One mutation of a valid model and the fragments its error must contain.
struct Bad {
  std::string what;
  std::function<void(json&, std::vector<rt::ConstantData>&)> mutate;
  std::vector<std::string> expect;
};

void check_rejections(const Case& k, const std::vector<Bad>& cases) {
  REQUIRE_NOTHROW(load(k.g.graph(), k.g.constants));
  for (const Bad& bad : cases) {
    json graph = k.g.graph();
    std::vector<rt::ConstantData> constants = k.g.constants;
    bad.mutate(graph, constants);
    INFO(bad.what);
    std::string message;
    try {
      load(graph, constants);
    } catch (const rt::ModelError& e) {
      message = e.what();
      CHECK(e.source() == "test.eq8");
    }
    INFO("message: " << message);
    REQUIRE_FALSE(message.empty());  // a ModelError was thrown (no other exception, no crash)
    CHECK_THAT(message, Contains("edgeqat int8 model 'test.eq8': "));
    for (const std::string& fragment : bad.expect) CHECK_THAT(message, Contains(fragment));
  }
}

}  // namespace

TEST_CASE("model: rejects bad header fields and values", "[model][errors]") {
  const std::string conv = "node 0 'block.conv1' (conv2d)";
  check_rejections(
      main_case(),
      {
          {"values not an array",
           [](json& g, auto&) { g["values"] = json::object(); },
           {"header, field 'values'", "must be an array"}},
          {"nodes missing",
           [](json& g, auto&) { g.erase("nodes"); },
           {"field 'nodes'", "is missing"}},
          {"producer not a string",
           [](json& g, auto&) { g["producer"] = 1; },
           {"field 'producer'", "must be a string"}},
          {"no inputs",
           [](json& g, auto&) { g["inputs"] = json::array(); },
           {"field 'inputs'", "at least one"}},
          {"input names no value",
           [](json& g, auto&) { g["inputs"] = {"y"}; },
           {"field 'inputs'", "names no value: 'y'"}},
          {"input listed twice",
           [](json& g, auto&) { g["inputs"] = {"x", "x"}; },
           {"field 'inputs'", "listed twice"}},
          {"input not a string",
           [](json& g, auto&) { g["inputs"] = {1}; },
           {"field 'inputs'", "must be a string"}},
          {"output names no value",
           [](json& g, auto&) { g["outputs"] = {"fc", "zz"}; },
           {"field 'outputs'", "'zz'"}},
          {"value not an object",
           [](json& g, auto&) { g["values"].push_back(3); },
           {"field 'values'", "must be an object"}},
          {"duplicate value",
           [](json& g, auto&) { g["values"].push_back(g["values"][1]); },
           {"value 'block.conv1'", "field 'name'", "duplicate value name"}},
          {"value name missing",
           [](json& g, auto&) { g["values"][0].erase("name"); },
           {"value 0", "field 'name'", "is missing"}},
          {"value name empty",
           [](json& g, auto&) { g["values"][0]["name"] = ""; },
           {"field 'name'", "must not be empty"}},
          {"unknown value key",
           [](json& g, auto&) { value_named(g, "gap")["dtype"] = "int8"; },
           {"value 'gap'", "field 'dtype'", "unknown key"}},
          {"shape not an array",
           [](json& g, auto&) { value_named(g, "x")["shape"] = "3x8x8"; },
           {"value 'x'", "field 'shape'"}},
          {"shape of rank 2",
           [](json& g, auto&) { value_named(g, "x")["shape"] = {3, 64}; },
           {"value 'x'", "field 'shape'", "[C, H, W] or [F]"}},
          {"zero dimension",
           [](json& g, auto&) { value_named(g, "x")["shape"] = {3, 0, 8}; },
           {"value 'x'", "field 'shape'", "dimension 1"}},
          {"float dimension",
           [](json& g, auto&) { value_named(g, "x")["shape"] = {3, 8.0, 8}; },
           {"value 'x'", "field 'shape'", "8.0"}},
          {"huge dimension",
           [](json& g, auto&) { value_named(g, "x")["shape"] = {3, uint64_t{1} << 63, 8}; },
           {"value 'x'", "field 'shape'", "must be an integer in [1, 2147483647]"}},
          {"too many elements",
           [](json& g, auto&) { value_named(g, "x")["shape"] = {65536, 65536, 2}; },
           {"value 'x'", "field 'shape'", "more than 2^31 - 1 elements"}},
          {"scale a string",
           [](json& g, auto&) { value_named(g, "gap")["scale"] = "0.5"; },
           {"value 'gap'", "field 'scale'", "must be a number"}},
          {"scale negative",
           [](json& g, auto&) { value_named(g, "gap")["scale"] = -0.5; },
           {"value 'gap'", "field 'scale'", "finite and > 0"}},
          {"scale zero",
           [](json& g, auto&) { value_named(g, "gap")["scale"] = 0; },
           {"value 'gap'", "field 'scale'", "finite and > 0"}},
          {"scale not a float32",
           [](json& g, auto&) { value_named(g, "gap")["scale"] = 0.1; },
           {"value 'gap'", "field 'scale'", "float32"}},
          {"scale beyond float32",
           [](json& g, auto&) { value_named(g, "gap")["scale"] = 1e300; },
           {"value 'gap'", "field 'scale'", "float32"}},
          {"zero point 128",
           [](json& g, auto&) { value_named(g, "fc")["zero_point"] = 128; },
           {"value 'fc'", "field 'zero_point'", "[-128, 127]"}},
          {"zero point 1.0",
           [](json& g, auto&) { value_named(g, "fc")["zero_point"] = 1.0; },
           {"value 'fc'", "field 'zero_point'", "must be an integer"}},
          {"zero point missing",
           [](json& g, auto&) { value_named(g, "fc").erase("zero_point"); },
           {"value 'fc'", "field 'zero_point'", "is missing"}},
          {"qmin > qmax",
           [](json& g, auto&) {
             value_named(g, "fc")["qmin"] = 10;
             value_named(g, "fc")["qmax"] = 9;
           },
           {"value 'fc'", "field 'qmin'", "must be <= qmax"}},
          {"qmax 128",
           [](json& g, auto&) { value_named(g, "fc")["qmax"] = 128; },
           {"value 'fc'", "field 'qmax'"}},
          {"qmin a bool",
           [](json& g, auto&) { value_named(g, "fc")["qmin"] = true; },
           {"value 'fc'", "field 'qmin'"}},
          {"value never defined",
           [](json& g, auto&) { g["values"].push_back(value_json({"orphan", {4}, 1.0f, 0})); },
           {"value 'orphan'", "neither a graph input nor the output of a node"}},
      });
}

TEST_CASE("model: rejects bad node fields and graph structure", "[model][errors]") {
  const std::string conv = "node 0 'block.conv1' (conv2d)";
  check_rejections(
      main_case(),
      {
          {"node not an object",
           [](json& g, auto&) { g["nodes"].push_back("relu"); },
           {"field 'nodes'", "nodes[6] must be an object"}},
          {"op missing",
           [](json& g, auto&) { g["nodes"][1].erase("op"); },
           {"node 1, field 'op'", "is missing"}},
          {"unknown op",
           [](json& g, auto&) { g["nodes"][1]["op"] = "relu"; },
           {"node 1, field 'op'", "unknown op 'relu'"}},
          {"op a number",
           [](json& g, auto&) { g["nodes"][1]["op"] = 5; },
           {"node 1, field 'op'", "must be a string"}},
          {"name missing",
           [](json& g, auto&) { g["nodes"][1].erase("name"); },
           {"node 1, field 'name'", "is missing"}},
          {"duplicate node name",
           [](json& g, auto&) { g["nodes"][1]["name"] = "block.conv1"; },
           {"node 1 'block.conv1' (conv2d)", "field 'name'", "duplicate node name (also node 0)"}},
          {"input names no value",
           [](json& g, auto&) { node_named(g, "gap")["inputs"] = {"q"}; },
           {"node 3 'gap' (average_pool2d)", "field 'inputs'", "names no value: 'q'"}},
          {"used before definition",
           [](json& g, auto&) { std::swap(g["nodes"][1], g["nodes"][2]); },
           {"node 1 'block.add' (add)", "field 'inputs'", "'block.dw' is used before"}},
          {"inputs not an array",
           [](json& g, auto&) { node_named(g, "gap")["inputs"] = "x"; },
           {"node 3 'gap' (average_pool2d)", "field 'inputs'", "must be an array"}},
          {"add with one input",
           [](json& g, auto&) { node_named(g, "block.add")["inputs"] = {"block.dw"}; },
           {"node 2 'block.add' (add)", "field 'inputs'", "must name 2 values, got 1"}},
          {"conv with two inputs",
           [](json& g, auto&) { g["nodes"][0]["inputs"] = {"x", "x"}; },
           {conv, "field 'inputs'", "must name 1 value, got 2"}},
          {"output names no value",
           [](json& g, auto&) { g["nodes"][0]["output"] = "nope"; },
           {conv, "field 'output'", "names no value: 'nope'"}},
          {"output defined twice",
           [](json& g, auto&) { g["nodes"][1]["output"] = "block.conv1"; },
           {"node 1 'block.dw' (conv2d)", "field 'output'", "already the output of node 0"}},
          {"output is a graph input",
           [](json& g, auto&) { g["nodes"][0]["output"] = "x"; },
           {conv, "field 'output'", "is a graph input"}},
          {"unknown attribute (misspelled bias)",
           [](json& g, auto&) {
             json& n = g["nodes"][0];
             n["biases"] = n["bias"];
             n.erase("bias");
           },
           {conv, "attribute 'biases'", "unknown key"}},
          {"flatten with an attribute",
           [](json& g, auto&) { node_named(g, "flatten")["axis"] = 1; },
           {"node 4 'flatten' (flatten)", "attribute 'axis'", "unknown key"}},
      });
}

TEST_CASE("model: rejects bad conv2d attributes and constants", "[model][errors]") {
  const std::string conv = "node 0 'block.conv1' (conv2d)";
  const std::string dw = "node 1 'block.dw' (conv2d)";
  auto attr = [](const char* key, json v) {
    return [key, v](json& g, std::vector<rt::ConstantData>&) { g["nodes"][0][key] = v; };
  };
  check_rejections(
      main_case(),
      {
          {"weight missing",
           [](json& g, auto&) { g["nodes"][0].erase("weight"); },
           {conv, "attribute 'weight'", "is missing"}},
          {"weight names no constant",
           attr("weight", "w0"),
           {conv, "attribute 'weight'", "names no constant: 'w0'"}},
          {"weight not a string", attr("weight", 3), {conv, "attribute 'weight'", "string"}},
          {"weight of dtype int32",
           attr("weight", "block.conv1.bias"),
           {conv, "attribute 'weight'", "must have dtype int8, got int32"}},
          {"weight of rank 3",
           [](json&, auto& cs) { constant_named(cs, "block.conv1.weight").shape = {8, 9, 3}; },
           {conv, "attribute 'weight'", "[O, KH, KW, C / groups]"}},
          {"weight with the wrong input channels",
           [](json&, auto& cs) { constant_named(cs, "block.conv1.weight").shape = {8, 3, 1, 9}; },
           {conv, "attribute 'weight'", "dimension 3 must be input channels / groups"}},
          {"kernel larger than the padded input",
           [](json& g, auto& cs) {
             constant_named(cs, "block.conv1.weight").shape = {8, 11, 1, 3};
             constant_named(cs, "block.conv1.weight").bytes.resize(8 * 11 * 3);
             (void)g;
           },
           {conv, "attribute 'weight'", "conv2d: the dilated kernel along h"}},
          {"bias of dtype float32",
           [](json& g, auto& cs) {
             cs.emplace_back("float_bias", std::vector<int64_t>{8}, std::vector<float>(8, 1.0f));
             g["nodes"][0]["bias"] = "float_bias";
           },
           {conv, "attribute 'bias'", "must have dtype int32, got float32"}},
          {"bias of the wrong shape",
           attr("bias", "fc.bias"),
           {conv, "attribute 'bias'", "must have shape [8], got [5]"}},
          {"weight_scale is not an attribute (the multipliers carry the scales)",
           attr("weight_scale", "block.conv1.multiplier"),
           {conv, "weight_scale"}},
          {"multiplier missing",
           [](json& g, auto&) { g["nodes"][0].erase("multiplier"); },
           {conv, "attribute 'multiplier'", "is missing"}},
          {"multiplier not normalized",
           [](json&, auto& cs) {
             const int32_t bad = 5;
             std::memcpy(constant_named(cs, "block.conv1.multiplier").bytes.data() + 4, &bad, 4);
           },
           {conv, "attribute 'multiplier'", "multiplier[1] must be 0 or in [2^30, 2^31), got 5"}},
          {"multiplier negative",
           [](json&, auto& cs) {
             const int32_t bad = -(1 << 30);
             std::memcpy(constant_named(cs, "block.conv1.multiplier").bytes.data(), &bad, 4);
           },
           {conv, "attribute 'multiplier'", "multiplier[0]"}},
          {"shift 31",
           [](json&, auto& cs) {
             const int8_t bad = 31;
             std::memcpy(constant_named(cs, "block.conv1.shift").bytes.data() + 3, &bad, 1);
           },
           {conv, "attribute 'shift'", "shift[3] must be in [-31, 30]", "got 31"}},
          {"shift with a zero multiplier",
           [](json&, auto& cs) {
             const int32_t zero = 0;
             std::memcpy(constant_named(cs, "block.conv1.multiplier").bytes.data(), &zero, 4);
           },
           {conv, "attribute 'shift'", "shift[0] must be 0 where multiplier[0] is 0"}},
          {"shift of the wrong shape",
           attr("shift", "fc.shift"),
           {conv, "attribute 'shift'", "must have shape [8]"}},
          {"stride 0", attr("stride", {0, 1}), {conv, "attribute 'stride'", "element 0"}},
          {"stride of 3 elements",
           attr("stride", {1, 1, 1}),
           {conv, "attribute 'stride'", "array of 2 integers"}},
          {"stride a float", attr("stride", {1.5, 1}), {conv, "attribute 'stride'", "1.5"}},
          {"stride missing",
           [](json& g, auto&) { g["nodes"][0].erase("stride"); },
           {conv, "attribute 'stride'", "is missing"}},
          {"padding negative",
           attr("padding", {1, -1, 1, 1}),
           {conv, "attribute 'padding'", "element 1", "got -1"}},
          {"padding of 2 elements",
           attr("padding", {1, 1}),
           {conv, "attribute 'padding'", "array of 4 integers"}},
          {"dilation 0", attr("dilation", {1, 0}), {conv, "attribute 'dilation'", "element 1"}},
          {"groups 0", attr("groups", 0), {conv, "attribute 'groups'", "got 0"}},
          {"groups a string", attr("groups", "1"), {conv, "attribute 'groups'"}},
          {"groups not dividing the input channels",
           attr("groups", 2),
           {conv, "attribute 'groups'", "groups (2) must divide the input channels (3)"}},
          {"groups not dividing the output channels",
           [](json& g, auto& cs) {
             g["nodes"][1]["groups"] = 4;  // C = 8: weight [O, 3, 3, 2], O = 6
             constant_named(cs, "block.dw.weight").shape = {6, 3, 3, 2};
             constant_named(cs, "block.dw.weight").bytes.resize(6 * 3 * 3 * 2);
           },
           {dw, "attribute 'groups'", "groups (4) must divide the output channels (6"}},
          {"output shape mismatch",
           [](json& g, auto&) { value_named(g, "block.conv1")["shape"] = {8, 7, 7}; },
           {conv, "field 'output'", "has shape [8, 7, 7]", "give [8, 8, 8]"}},
          {"act_min below the output's qmin",
           [](json& g, auto&) { value_named(g, "block.conv1")["qmin"] = -10; },
           {conv, "attribute 'act_min'", "act_min (-20) must be >= qmin (-10)"}},
          {"act_max above the output's qmax",
           [](json& g, auto&) { value_named(g, "block.conv1")["qmax"] = 100; },
           {conv, "attribute 'act_max'", "act_max (127) must be <= qmax (100)"}},
          {"act_min > act_max",
           attr("act_max", -50),
           {conv, "attribute 'act_min'", "act_min (-20) must be <= act_max (-50)"}},
          {"act_min out of int8", attr("act_min", -129), {conv, "attribute 'act_min'", "-129"}},
          {"act_max missing",
           [](json& g, auto&) { g["nodes"][0].erase("act_max"); },
           {conv, "attribute 'act_max'", "is missing"}},
          {"depthwise weight of the wrong shape",
           [](json&, auto& cs) { constant_named(cs, "block.dw.weight").shape = {8, 1, 9, 1}; },
           {dw, "field 'output'", "give [8, 10, 2]"}},
      });
}

TEST_CASE("model: rejects bad fully_connected, add, pool, flatten and concat nodes",
          "[model][errors]") {
  const std::string fc = "node 5 'fc' (fully_connected)";
  const std::string add = "node 2 'block.add' (add)";
  const std::string gap = "node 3 'gap' (average_pool2d)";
  const std::string flat = "node 4 'flatten' (flatten)";
  check_rejections(
      main_case(),
      {
          {"fc on an image",
           [](json& g, auto&) { node_named(g, "fc")["inputs"] = {"gap"}; },
           {fc, "field 'inputs'", "must have shape [F]", "flatten it first"}},
          {"fc weight of the wrong shape",
           [](json&, auto& cs) { constant_named(cs, "fc.weight").shape = {8, 5}; },
           {fc, "attribute 'weight'", "must have shape [O, 8]", "got [8, 5]"}},
          {"fc output shape",
           [](json& g, auto&) { value_named(g, "fc")["shape"] = {6}; },
           {fc, "field 'output'", "give [5]"}},
          {"fc without multiplier",
           [](json& g, auto&) { node_named(g, "fc").erase("shift"); },
           {fc, "attribute 'shift'", "is missing"}},
          {"fc with a stride",
           [](json& g, auto&) { node_named(g, "fc")["stride"] = {1, 1}; },
           {fc, "attribute 'stride'", "unknown key"}},
          {"add of different shapes",
           [](json& g, auto&) { node_named(g, "block.add")["inputs"] = {"block.conv1", "x"}; },
           {add, "field 'inputs'", "must have the same shape"}},
          {"add left_shift 21",
           [](json& g, auto&) { node_named(g, "block.add")["left_shift"] = 21; },
           {add, "attribute 'left_shift'", "[0, 20]", "21"}},
          {"add input multiplier >= 1",
           [](json& g, auto&) { node_named(g, "block.add")["input2_multiplier"] = {1 << 30, 1}; },
           {add, "attribute 'input2_multiplier'", "must be < 1"}},
          {"add multiplier not a pair",
           [](json& g, auto&) { node_named(g, "block.add")["output_multiplier"] = {1, 2, 3}; },
           {add, "attribute 'output_multiplier'", "[multiplier, shift]"}},
          {"add multiplier not normalized",
           [](json& g, auto&) { node_named(g, "block.add")["input1_multiplier"] = {12345, -1}; },
           {add, "attribute 'input1_multiplier'", "0 or in [2^30, 2^31)", "12345"}},
          {"add multiplier shift -32",
           [](json& g, auto&) { node_named(g, "block.add")["output_multiplier"] = {1 << 30, -32}; },
           {add, "attribute 'output_multiplier'", "shift must be an integer in [-31, 30]"}},
          {"add act range outside the output grid",
           [](json& g, auto&) { value_named(g, "block.add")["qmax"] = 50; },
           {add, "attribute 'act_max'"}},
          {"add output shape",
           [](json& g, auto&) { value_named(g, "block.add")["shape"] = {8, 8, 9}; },
           {add, "field 'output'"}},
          {"pool kernel 0",
           [](json& g, auto&) { node_named(g, "gap")["kernel"] = {0, 8}; },
           {gap, "attribute 'kernel'", "element 0"}},
          {"pool kernel larger than the input",
           [](json& g, auto&) { node_named(g, "gap")["kernel"] = {9, 8}; },
           {gap, "attribute 'kernel'", "average_pool2d: the dilated kernel along h"}},
          {"pool window in the padding",
           [](json& g, auto&) {
             json& n = node_named(g, "gap");
             n["kernel"] = {2, 2};
             n["padding"] = {2, 0, 2, 0};
             value_named(g, "gap")["shape"] = {8, 11, 7};
           },
           {gap, "attribute 'padding'", "window in the padding"}},
          {"pool window of more than 2^24 taps",
           [](json& g, auto&) { node_named(g, "gap")["kernel"] = {8192, 4096}; },
           {gap, "attribute 'kernel'", "2^24"}},
          {"pool output scale differs",
           [](json& g, auto&) { value_named(g, "gap")["scale"] = 0.5; },
           {gap, "field 'output'", "must keep the input's scale and zero point"}},
          {"pool output zero point differs",
           [](json& g, auto&) { value_named(g, "gap")["zero_point"] = 0; },
           {gap, "field 'output'", "must keep the input's scale and zero point"}},
          {"pool output shape",
           [](json& g, auto&) { value_named(g, "gap")["shape"] = {8, 1, 2}; },
           {gap, "field 'output'", "give [8, 1, 1]"}},
          {"pool stride missing",
           [](json& g, auto&) { node_named(g, "gap").erase("stride"); },
           {gap, "attribute 'stride'", "is missing"}},
          {"flatten output shape",
           [](json& g, auto&) { value_named(g, "flatten")["shape"] = {8, 1, 1}; },
           {flat, "field 'output'", "give [8]"}},
          {"flatten output zero point",
           [](json& g, auto&) { value_named(g, "flatten")["zero_point"] = 3; },
           {flat, "field 'output'", "scale and zero point"}},
          {"flatten of a value defined later",
           [](json& g, auto&) { node_named(g, "flatten")["inputs"] = {"fc"}; },
           {flat, "field 'inputs'"}},
      });

  const std::string cat = "node 0 'cat' (concat)";
  check_rejections(concat_case(),
                   {
                       {"concat multipliers count",
                        [](json& g, auto&) { g["nodes"][0]["multipliers"].erase(1); },
                        {cat, "attribute 'multipliers'", "array of 2 [multiplier, shift] pairs"}},
                       {"concat multiplier not a pair",
                        [](json& g, auto&) { g["nodes"][0]["multipliers"][1] = 7; },
                        {cat, "attribute 'multipliers'", "element 1"}},
                       {"concat multiplier shift 31",
                        [](json& g, auto&) { g["nodes"][0]["multipliers"][0][1] = 31; },
                        {cat, "attribute 'multipliers'", "element 0 shift"}},
                       {"concat of different H",
                        [](json& g, auto&) { value_named(g, "b")["shape"] = {3, 5, 4}; },
                        {cat, "field 'inputs'", "same H and W"}},
                       {"concat output channels",
                        [](json& g, auto&) { value_named(g, "cat")["shape"] = {4, 4, 4}; },
                        {cat, "field 'output'", "give [5, 4, 4]"}},
                       {"concat of nothing",
                        [](json& g, auto&) { g["nodes"][0]["inputs"] = json::array(); },
                        {cat, "field 'inputs'", "at least 1"}},
                       {"concat act_min above act_max",
                        [](json& g, auto&) { g["nodes"][0]["act_min"] = 101; },
                        {cat, "attribute 'act_min'", "must be <= act_max"}},
                   });

  // The accumulation limit: a fully connected layer over more than 65536 features.
  Graph g;
  const Tv x = g.add_value({"x", {70000}, 0.02f, 0});
  g.inputs = {"x"};
  add_fc(g, x, "wide", 0.05f, 0, 1, rt::Activation::kNone);
  g.outputs = {"wide"};
  CHECK_THROWS_WITH(load(g.graph(), g.constants), Contains("node 0 'wide' (fully_connected)") &&
                                                      Contains("'weight'") &&
                                                      Contains("accumulation limit 65536"));
}

TEST_CASE("model: random header mutations are a ModelError or a model that runs",
          "[model][errors]") {
  // Any field of a valid header replaced by an arbitrary JSON value: the loader either rejects
  // it with a ModelError or accepts a graph that then runs (no crash, no other exception).
  const std::vector<json> replacements = {0,
                                          -1,
                                          1,
                                          2,
                                          127,
                                          -129,
                                          int64_t{1} << 31,
                                          -(int64_t{1} << 31) - 1,
                                          uint64_t{1} << 63,
                                          1.5,
                                          0.25,
                                          1e300,
                                          "x",
                                          "block.conv1",
                                          "fc.weight",
                                          nullptr,
                                          true,
                                          json::array(),
                                          json::object(),
                                          {0, 0},
                                          {1, 1, 1, 1},
                                          {1 << 30, -31}};
  for (const auto& make : {main_case, pool_case, concat_case}) {
    const Case k = make();
    const json valid = k.g.graph();
    // Every location in the header, as JSON pointers.
    std::vector<json::json_pointer> where;
    std::function<void(const json&, const json::json_pointer&)> walk =
        [&](const json& j, const json::json_pointer& p) {
          where.push_back(p);
          if (j.is_object()) {
            for (auto it = j.begin(); it != j.end(); ++it) walk(it.value(), p / it.key());
          } else if (j.is_array()) {
            for (size_t i = 0; i < j.size(); ++i) walk(j[i], p / i);
          }
        };
    walk(valid, json::json_pointer());
    int accepted = 0;
    for (int trial = 0; trial < 300; ++trial) {
      json graph = valid;
      const json::json_pointer& p =
          where[static_cast<size_t>(uniform_int(1, static_cast<int>(where.size()) - 1))];
      graph[p] = replacements[static_cast<size_t>(
          uniform_int(0, static_cast<int>(replacements.size()) - 1))];
      INFO("trial " << trial << ": " << p.to_string() << " = " << graph[p].dump());
      bool loaded = false;
      try {
        rt::Model model = load(graph, k.g.constants);
        loaded = true;
        std::vector<std::vector<int8_t>> in;
        for (const rt::ValueInfo& info : model.inputs()) {
          in.push_back(random_int8(static_cast<size_t>(2 * info.numel())));
        }
        const auto out = model.run_int8(ptrs(in), 2);
        CHECK(out.size() == model.outputs().size());
        ++accepted;
      } catch (const rt::ModelError&) {
        CHECK_FALSE(loaded);
      } catch (const std::invalid_argument& e) {
        // serialize_model_file's own checks (e.g. a "format" it does not write)
        CHECK_FALSE(loaded);
        CHECK_THAT(e.what(), Contains("serialize_model_file"));
      }
    }
    CHECK(accepted < 300);
  }
}
