// GraphBuilder: float layers + fake-quant ranges -> the int8 graph (docs/int8-format.md).
#include "edgeqat/runtime/builder.h"

#include <cmath>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <utility>

#include "edgeqat/runtime/checks.h"
#include "edgeqat/runtime/requantize.h"
#include "ops/fake_quant_math.h"  // the fake-quant op's own nudging (torch-free)

namespace edgeqat::runtime {

namespace {

template <class... Parts>
[[noreturn]] void fail(const std::string& where, const Parts&... parts) {
  std::ostringstream os;
  os.precision(std::numeric_limits<float>::max_digits10);
  os << "edgeqat export: " << where << ": ";
  (os << ... << parts);
  throw std::invalid_argument(os.str());
}

// The fake-quant grid of a range: quant_min / quant_max as the op computes them.
struct Grid {
  int64_t quant_min, quant_max;
};

Grid grid_of_bits(int num_bits, bool narrow_range, int max_bits, const std::string& what) {
  if (num_bits < 2 || num_bits > max_bits) {
    fail(what, "num_bits must be in [2, ", max_bits, "] for the int8 model, got ", num_bits);
  }
  return {edgeqat::detail::quant_min(narrow_range), edgeqat::detail::quant_max(num_bits)};
}

void check_range(float min, float max, const std::string& what) {
  if (!std::isfinite(min) || !std::isfinite(max) || !(min <= max) || !std::isfinite(max - min)) {
    fail(what, "the range [", min, ", ", max, "] must be finite with min <= max");
  }
}

std::vector<int64_t> chw(const std::vector<int64_t>& shape, const std::string& what) {
  if (shape.size() != 3) fail(what, "expects an image value [C, H, W], got rank ", shape.size());
  return shape;
}

int to_int(int64_t v, const std::string& what, const char* arg) {
  if (v <= 0 || v > std::numeric_limits<int>::max()) fail(what, arg, " out of range: ", v);
  return static_cast<int>(v);
}

// The output clamp of a fused activation, within the output value's grid.
std::pair<int32_t, int32_t> output_clamp(Activation activation, const Int8Grid& out) {
  const ActivationRange act = activation_range(activation, out.scale, out.zero_point);
  return {std::max(act.min, out.qmin), std::min(act.max, out.qmax)};
}

nlohmann::json multiplier_json(QuantizedMultiplier m) {
  return nlohmann::json::array({m.multiplier, m.shift});
}

}  // namespace

Int8Grid int8_grid(const QuantRange& range, const std::string& what) {
  const Grid g = grid_of_bits(range.num_bits, range.narrow_range, 8, what);
  check_range(range.min, range.max, what);
  const auto r = edgeqat::detail::nudge<float>(range.min, range.max, g.quant_min, g.quant_max);
  Int8Grid out;
  // Grid index k in [0, quant_max - quant_min] is stored as k + quant_min - 128, so the op's
  // real value (k - zero_index) * scale is (q - zero_point) * scale.
  out.qmin = static_cast<int32_t>(g.quant_min) - 128;
  out.qmax = static_cast<int32_t>(g.quant_max) - 128;
  if (r.degenerate()) {
    // min == max == 0 (a tensor that was always 0, e.g. a dead ReLU): the op outputs exactly 0.
    // Any scale will do with a one-point grid at the zero point.
    out.scale = 1.0f;
    out.zero_point = out.qmin;
    out.qmax = out.qmin;
    return out;
  }
  out.scale = r.scale;
  out.zero_point = static_cast<int32_t>(r.zero_index) + out.qmin;
  return out;
}

GraphBuilder::GraphBuilder(std::string producer) {
  graph_ = nlohmann::json::object();
  graph_["format"] = "edgeqat.int8";
  graph_["producer"] = std::move(producer);
  graph_["values"] = nlohmann::json::array();
  graph_["inputs"] = nlohmann::json::array();
  graph_["outputs"] = nlohmann::json::array();
  graph_["nodes"] = nlohmann::json::array();
}

const GraphBuilder::Value& GraphBuilder::value(const std::string& name,
                                               const std::string& user) const {
  auto it = values_.find(name);
  if (it == values_.end()) fail(user, "unknown input value '", name, "'");
  return it->second;
}

const std::vector<int64_t>& GraphBuilder::shape_of(const std::string& v) const {
  return value(v, "shape_of").shape;
}

Int8Grid GraphBuilder::grid_of(const std::string& v) const { return value(v, "grid_of").grid; }

std::string GraphBuilder::define(const std::string& name, std::vector<int64_t> shape,
                                 const Int8Grid& grid) {
  if (name.empty()) fail("node", "an empty name");
  if (values_.count(name)) fail(name, "a value named '", name, "' exists already");
  for (int64_t d : shape) {
    if (d <= 0) fail(name, "shape dimensions must be positive, got ", d);
  }
  graph_["values"].push_back({{"name", name},
                              {"shape", shape},
                              {"scale", grid.scale},
                              {"zero_point", grid.zero_point},
                              {"qmin", grid.qmin},
                              {"qmax", grid.qmax}});
  values_[name] = Value{std::move(shape), grid};
  return name;
}

void GraphBuilder::add_constant(ConstantData constant) {
  constants_.push_back(std::move(constant));
}

std::string GraphBuilder::add_input(const std::string& name, const std::vector<int64_t>& shape,
                                    const QuantRange& range) {
  if (shape.size() != 1 && shape.size() != 3) {
    fail(name, "input shape must be [C, H, W] or [F], got rank ", shape.size());
  }
  define(name, shape, int8_grid(range, name));
  graph_["inputs"].push_back(name);
  return name;
}

std::string GraphBuilder::add_weighted(
    const std::string& op, const std::string& name, const std::string& input, int64_t out_channels,
    const std::vector<int64_t>& file_weight_shape, const std::vector<int64_t>& pytorch_weight_shape,
    const float* weight, const float* bias, const std::vector<float>& weight_min,
    const std::vector<float>& weight_max, int weight_bits, bool weight_narrow_range,
    Activation activation, const QuantRange& output_range, std::vector<int64_t> output_shape,
    nlohmann::json node) {
  const Value& in = value(input, name);
  if (weight == nullptr) fail(name, "weight is null");
  const size_t channels = static_cast<size_t>(out_channels);
  if (!(weight_min.size() == weight_max.size() &&
        (weight_min.size() == 1 || weight_min.size() == channels))) {
    fail(name, "weight_min / weight_max must both have 1 or ", channels, " entries, got ",
         weight_min.size(), " and ", weight_max.size());
  }
  const Grid g = grid_of_bits(weight_bits, weight_narrow_range, 8, name + " weight");
  const Int8Grid out = int8_grid(output_range, name + " output");

  // Weights per output channel, with the fake-quant op's nudging and rounding.
  int64_t per_channel = 1;
  for (size_t i = 1; i < pytorch_weight_shape.size(); ++i) per_channel *= pytorch_weight_shape[i];
  std::vector<int8_t> q(static_cast<size_t>(out_channels * per_channel));
  std::vector<float> weight_scales(channels);
  std::vector<double> scales_double(channels);
  for (size_t c = 0; c < channels; ++c) {
    const size_t r = weight_min.size() == 1 ? 0 : c;
    const std::string what = name + " weight channel " + std::to_string(c);
    check_range(weight_min[r], weight_max[r], what);
    const auto nr =
        edgeqat::detail::nudge<float>(weight_min[r], weight_max[r], g.quant_min, g.quant_max);
    const float* w = weight + c * static_cast<size_t>(per_channel);
    int8_t* qc = q.data() + c * static_cast<size_t>(per_channel);
    if (nr.degenerate()) {
      // The op quantizes the whole channel to 0; any positive scale represents that.
      weight_scales[c] = 1.0f;
      for (int64_t i = 0; i < per_channel; ++i) qc[i] = 0;
    } else {
      weight_scales[c] = nr.scale;
      for (int64_t i = 0; i < per_channel; ++i) {
        if (!std::isfinite(w[i])) fail(what, "weight value ", i, " is not finite: ", w[i]);
        const float lo = w[i] < nr.nudged_min ? nr.nudged_min : w[i];
        const float clamped = nr.nudged_max < lo ? nr.nudged_max : lo;
        const float k = std::floor((clamped - nr.nudged_min) / nr.scale + 0.5f);
        // The op's output is (k - zero_index) * scale: stored with zero point 0.
        const float v = k - nr.zero_index;
        if (v < -128.0f || v > 127.0f) {
          fail(what, "the weight range [", weight_min[r], ", ", weight_max[r], "] has zero point ",
               nr.zero_index + static_cast<float>(g.quant_min), " on the grid [", g.quant_min, ", ",
               g.quant_max, "]: the int8 model needs weights symmetric around 0 (zero point 0)");
        }
        qc[i] = static_cast<int8_t>(v);
      }
    }
    scales_double[c] = weight_scales[c];
  }
  // The file's weight layout: OHWI (conv) from OIHW, or [out, in] unchanged (fc).
  std::vector<int8_t> stored = q;
  if (pytorch_weight_shape.size() == 4) {
    const int64_t I = pytorch_weight_shape[1], KH = pytorch_weight_shape[2],
                  KW = pytorch_weight_shape[3];
    for (int64_t o = 0; o < out_channels; ++o)
      for (int64_t i = 0; i < I; ++i)
        for (int64_t h = 0; h < KH; ++h)
          for (int64_t w = 0; w < KW; ++w)
            stored[static_cast<size_t>(((o * KH + h) * KW + w) * I + i)] =
                q[static_cast<size_t>(((o * I + i) * KH + h) * KW + w)];
  }

  // Multipliers s_in * s_w[c] / s_out and the clamp.
  const auto [act_min, act_max] = output_clamp(activation, out);
  const ConvSetup setup = make_conv_params(in.grid.scale, in.grid.zero_point, scales_double,
                                           out.scale, out.zero_point, {act_min, act_max});
  // shift in [-31, 30]: one byte per channel (the file stays small for thin layers).
  std::vector<int32_t> multipliers(channels);
  std::vector<int8_t> shifts(channels);
  for (size_t c = 0; c < channels; ++c) {
    multipliers[c] = setup.multipliers[c].multiplier;
    shifts[c] = static_cast<int8_t>(setup.multipliers[c].shift);
  }

  node["op"] = op;
  node["name"] = name;
  node["inputs"] = nlohmann::json::array({input});
  node["output"] = name;
  node["weight"] = name + ".weight";
  node["multiplier"] = name + ".multiplier";
  node["shift"] = name + ".shift";
  node["act_min"] = act_min;
  node["act_max"] = act_max;
  add_constant(ConstantData(name + ".weight", file_weight_shape, stored));
  weight_scales_[name] = weight_scales;
  add_constant(ConstantData(name + ".multiplier", {out_channels}, multipliers));
  add_constant(ConstantData(name + ".shift", {out_channels}, shifts));
  if (bias != nullptr) {
    // int32 bias with scale s_in * s_w[c], zero point 0.
    std::vector<int32_t> qb(channels);
    for (size_t c = 0; c < channels; ++c) {
      const double scale = static_cast<double>(in.grid.scale) * scales_double[c];
      const double v = std::round(static_cast<double>(bias[c]) / scale);
      if (!std::isfinite(bias[c]) || !(std::fabs(v) <= 2147483647.0)) {
        fail(name, "bias channel ", c, " = ", bias[c], " does not fit int32 at scale ", scale);
      }
      qb[c] = static_cast<int32_t>(v);
    }
    node["bias"] = name + ".bias";
    add_constant(ConstantData(name + ".bias", {out_channels}, qb));
  }
  graph_["nodes"].push_back(std::move(node));
  return define(name, std::move(output_shape), out);
}

std::string GraphBuilder::add_conv2d(const ConvLayer& layer, const std::string& input,
                                     const QuantRange& output_range) {
  const std::string& name = layer.name;
  const auto in_shape = chw(value(input, name).shape, name);
  const auto& ws = layer.weight_shape;
  const int64_t O = ws[0], I = ws[1], KH = ws[2], KW = ws[3];
  if (layer.groups <= 0 || in_shape[0] % layer.groups != 0 || O % layer.groups != 0 ||
      I * layer.groups != in_shape[0]) {
    fail(name, "groups = ", layer.groups, " with weight [", O, ", ", I, ", ", KH, ", ", KW,
         "] does not match the input's ", in_shape[0], " channels");
  }
  const int oh = window_output_size(
      to_int(in_shape[1], name, "input height"), to_int(KH, name, "kernel height"), layer.stride[0],
      layer.dilation[0], layer.padding[0], layer.padding[2], name.c_str(), "h");
  const int ow = window_output_size(
      to_int(in_shape[2], name, "input width"), to_int(KW, name, "kernel width"), layer.stride[1],
      layer.dilation[1], layer.padding[1], layer.padding[3], name.c_str(), "w");
  nlohmann::json node = {{"stride", layer.stride},
                         {"padding", layer.padding},
                         {"dilation", layer.dilation},
                         {"groups", layer.groups}};
  return add_weighted("conv2d", name, input, O, {O, KH, KW, I}, {O, I, KH, KW}, layer.weight,
                      layer.bias, layer.weight_min, layer.weight_max, layer.weight_bits,
                      layer.weight_narrow_range, layer.activation, output_range, {O, oh, ow},
                      std::move(node));
}

std::string GraphBuilder::add_fully_connected(const LinearLayer& layer, const std::string& input,
                                              const QuantRange& output_range) {
  const std::string& name = layer.name;
  const auto& in_shape = value(input, name).shape;
  const int64_t O = layer.weight_shape[0], I = layer.weight_shape[1];
  if (in_shape.size() != 1 || in_shape[0] != I) {
    std::ostringstream s;
    for (int64_t d : in_shape) s << d << ' ';
    fail(name, "a fully connected layer with ", I, " inputs needs a [", I,
         "] vector input (flatten first), got shape [ ", s.str(), "]");
  }
  return add_weighted("fully_connected", name, input, O, {O, I}, {O, I}, layer.weight, layer.bias,
                      layer.weight_min, layer.weight_max, layer.weight_bits,
                      layer.weight_narrow_range, layer.activation, output_range, {O},
                      nlohmann::json::object());
}

std::string GraphBuilder::add_add(const std::string& name, const std::string& a,
                                  const std::string& b, Activation activation,
                                  const QuantRange& output_range) {
  const Value& va = value(a, name);
  const Value& vb = value(b, name);
  if (va.shape != vb.shape) fail(name, "add inputs '", a, "' and '", b, "' differ in shape");
  const Int8Grid out = int8_grid(output_range, name + " output");
  const auto [act_min, act_max] = output_clamp(activation, out);
  const AddParams p =
      make_add_params(va.grid.scale, va.grid.zero_point, vb.grid.scale, vb.grid.zero_point,
                      out.scale, out.zero_point, act_min, act_max);
  graph_["nodes"].push_back({{"op", "add"},
                             {"name", name},
                             {"inputs", {a, b}},
                             {"output", name},
                             {"left_shift", p.left_shift},
                             {"input1_multiplier", multiplier_json(p.input1_multiplier)},
                             {"input2_multiplier", multiplier_json(p.input2_multiplier)},
                             {"output_multiplier", multiplier_json(p.output_multiplier)},
                             {"act_min", act_min},
                             {"act_max", act_max}});
  return define(name, va.shape, out);
}

namespace {

std::vector<int64_t> pooled_shape(const std::vector<int64_t>& in, std::array<int, 2> kernel,
                                  std::array<int, 2> stride, std::array<int, 4> padding,
                                  const std::string& name) {
  const auto s = chw(in, name);
  const int h = to_int(s[1], name, "input height"), w = to_int(s[2], name, "input width");
  const int oh =
      window_output_size(h, kernel[0], stride[0], 1, padding[0], padding[2], name.c_str(), "h");
  const int ow =
      window_output_size(w, kernel[1], stride[1], 1, padding[1], padding[3], name.c_str(), "w");
  // Every window must hold a tap inside the image (checks.h's pool check).
  const PoolParams p = make_pool_params(kernel[0], kernel[1], stride[0], stride[1],
                                        {padding[0], padding[1], padding[2], padding[3]});
  check_pool2d(p, Shape4{1, h, w, to_int(s[0], name, "channels")},
               Shape4{1, oh, ow, static_cast<int>(s[0])}, name.c_str());
  return {s[0], oh, ow};
}

}  // namespace

std::string GraphBuilder::add_average_pool2d(const std::string& name, const std::string& input,
                                             std::array<int, 2> kernel, std::array<int, 2> stride,
                                             std::array<int, 4> padding) {
  const Value& in = value(input, name);
  auto shape = pooled_shape(in.shape, kernel, stride, padding, name);
  graph_["nodes"].push_back({{"op", "average_pool2d"},
                             {"name", name},
                             {"inputs", {input}},
                             {"output", name},
                             {"kernel", kernel},
                             {"stride", stride},
                             {"padding", padding}});
  return define(name, std::move(shape), in.grid);
}

std::string GraphBuilder::add_max_pool2d(const std::string& name, const std::string& input,
                                         std::array<int, 2> kernel, std::array<int, 2> stride,
                                         std::array<int, 4> padding) {
  const Value& in = value(input, name);
  auto shape = pooled_shape(in.shape, kernel, stride, padding, name);
  graph_["nodes"].push_back({{"op", "max_pool2d"},
                             {"name", name},
                             {"inputs", {input}},
                             {"output", name},
                             {"kernel", kernel},
                             {"stride", stride},
                             {"padding", padding}});
  return define(name, std::move(shape), in.grid);
}

std::string GraphBuilder::add_flatten(const std::string& name, const std::string& input) {
  const Value& in = value(input, name);
  const auto s = chw(in.shape, name);
  graph_["nodes"].push_back(
      {{"op", "flatten"}, {"name", name}, {"inputs", {input}}, {"output", name}});
  return define(name, {s[0] * s[1] * s[2]}, in.grid);
}

std::string GraphBuilder::add_concat(const std::string& name,
                                     const std::vector<std::string>& inputs,
                                     const QuantRange& output_range) {
  if (inputs.empty()) fail(name, "concat needs at least one input");
  const Int8Grid out = int8_grid(output_range, name + " output");
  int64_t channels = 0;
  std::vector<int64_t> first;
  nlohmann::json multipliers = nlohmann::json::array();
  for (const auto& input : inputs) {
    const Value& v = value(input, name);
    const auto s = chw(v.shape, name);
    if (first.empty()) first = s;
    if (s[1] != first[1] || s[2] != first[2]) {
      fail(name, "concat input '", input, "' is ", s[1], "x", s[2], ", the first is ", first[1],
           "x", first[2]);
    }
    channels += s[0];
    // Each input requantized to the output grid: multiplier s_i / s_out.
    multipliers.push_back(multiplier_json(
        quantize_multiplier(static_cast<double>(v.grid.scale) / static_cast<double>(out.scale))));
  }
  graph_["nodes"].push_back({{"op", "concat"},
                             {"name", name},
                             {"inputs", inputs},
                             {"output", name},
                             {"multipliers", multipliers},
                             {"act_min", out.qmin},
                             {"act_max", out.qmax}});
  return define(name, {channels, first[1], first[2]}, out);
}

void GraphBuilder::mark_output(const std::string& v) {
  value(v, "mark_output");
  graph_["outputs"].push_back(v);
}

std::vector<uint8_t> GraphBuilder::serialize() const {
  if (graph_["outputs"].empty()) fail("graph", "no output marked (mark_output)");
  return serialize_model_file(graph_, constants_);
}

void GraphBuilder::save(const std::string& path) const {
  if (graph_["outputs"].empty()) fail("graph", "no output marked (mark_output)");
  write_model_file(path, graph_, constants_);
}

}  // namespace edgeqat::runtime
