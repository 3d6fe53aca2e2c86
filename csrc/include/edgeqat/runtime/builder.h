// The exporter's core: turns a trained QAT / calibrated model, described layer by layer in float
// (folded weights, the ranges its fake quantizers used), into the int8 graph of
// docs/int8-format.md. Torch-free, so the Python exporter (edgeqat.export, through the
// edgeqat._runtime module) and the C++ one (edgeqat::export_int8) share every numeric step:
//
//   - an activation range [min, max] on the grid [quant_min, quant_max] is nudged exactly as the
//     fake-quant op nudges it (TensorFlow's Nudge, float32, fake_quant_math.h); the int8 value
//     is the grid index minus 128 + quant_min, so real = (q - zero_point) * scale holds with the
//     op's own scale and zero point;
//   - weights are quantized with the op's own formula (floor((clamp(w) - nudged_min) / scale +
//     0.5), float32) per output channel, stored as index - zero index (zero point 0);
//   - bias: round(b / (s_in * s_w[c])) in double, int32 (an error names the channel if it
//     does not fit);
//   - per-channel multipliers s_in * s_w[c] / s_out in double, quantize_multiplier'd once here;
//   - ReLU / ReLU6 become the output clamp (activation_range), within the output grid.
//
// Example:
//   GraphBuilder b("edgeqat 0.1.0");
//   auto x = b.add_input("input", {1, 28, 28}, {-1.0f, 1.0f});
//   ConvLayer conv{"conv1", {16, 1, 3, 3}, w.data(), bias.data(), wmin, wmax};
//   conv.padding = {1, 1, 1, 1};
//   conv.activation = Activation::kRelu;
//   auto y = b.add_conv2d(conv, x, {0.0f, 6.0f});
//   b.mark_output(y);
//   b.save("model.eq8");
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "edgeqat/runtime/model_file.h"
#include "edgeqat/runtime/params.h"

namespace edgeqat::runtime {

// The range a fake quantizer used (before nudging, as the op receives it) and its grid.
// Activations: 2..8 bits; the int8 value range is [quant_min - 128, quant_max - 128] with
// quant_min = narrow_range ? 1 : 0, quant_max = 2^num_bits - 1.
struct QuantRange {
  float min = 0.0f;
  float max = 0.0f;
  int num_bits = 8;
  bool narrow_range = false;
};

// A conv layer as trained: folded float weight OIHW (PyTorch layout), float bias (or null), the
// weight quantizer's range per output channel (or one entry for a per-tensor quantizer).
struct ConvLayer {
  std::string name;
  std::array<int64_t, 4> weight_shape{};  // [out, in / groups, kh, kw]
  const float* weight = nullptr;
  const float* bias = nullptr;  // [out] or null
  std::vector<float> weight_min, weight_max;
  int weight_bits = 8;
  bool weight_narrow_range = true;
  std::array<int, 2> stride{1, 1};
  std::array<int, 4> padding{0, 0, 0, 0};  // top, left, bottom, right
  std::array<int, 2> dilation{1, 1};
  int groups = 1;
  Activation activation = Activation::kNone;
};

// A fully connected layer: weight [out, in] (PyTorch layout), the rest as ConvLayer.
struct LinearLayer {
  std::string name;
  std::array<int64_t, 2> weight_shape{};
  const float* weight = nullptr;
  const float* bias = nullptr;
  std::vector<float> weight_min, weight_max;
  int weight_bits = 8;
  bool weight_narrow_range = true;
  Activation activation = Activation::kNone;
};

// The int8 parameters of a range: what a value of the file carries.
struct Int8Grid {
  float scale = 1.0f;
  int32_t zero_point = 0;
  int32_t qmin = kInt8Min, qmax = kInt8Max;
};
// Throws std::invalid_argument naming `what` for a range the int8 model cannot hold (non-finite,
// min > max, more than 8 bits, a degenerate range).
Int8Grid int8_grid(const QuantRange& range, const std::string& what);

// Builds the graph node by node (each add_* returns the name of the value it defines, which is
// the node's name) and writes the file. Every method throws std::invalid_argument naming the
// layer and the argument on bad input (unknown value, shapes that do not agree, ...).
class GraphBuilder {
 public:
  explicit GraphBuilder(std::string producer);

  // A graph input with per-sample shape `shape` ([C, H, W] or [F]).
  std::string add_input(const std::string& name, const std::vector<int64_t>& shape,
                        const QuantRange& range);
  std::string add_conv2d(const ConvLayer& layer, const std::string& input,
                         const QuantRange& output_range);
  std::string add_fully_connected(const LinearLayer& layer, const std::string& input,
                                  const QuantRange& output_range);
  std::string add_add(const std::string& name, const std::string& a, const std::string& b,
                      Activation activation, const QuantRange& output_range);
  // Average pooling (taps in the padding not counted); output keeps the input's parameters.
  std::string add_average_pool2d(const std::string& name, const std::string& input,
                                 std::array<int, 2> kernel, std::array<int, 2> stride,
                                 std::array<int, 4> padding);
  std::string add_max_pool2d(const std::string& name, const std::string& input,
                             std::array<int, 2> kernel, std::array<int, 2> stride,
                             std::array<int, 4> padding);
  // [C, H, W] -> [C * H * W] in PyTorch order.
  std::string add_flatten(const std::string& name, const std::string& input);
  // Channel concat, each input requantized to the output's grid.
  std::string add_concat(const std::string& name, const std::vector<std::string>& inputs,
                         const QuantRange& output_range);
  void mark_output(const std::string& value);

  bool has_value(const std::string& name) const { return values_.count(name) != 0; }
  const std::vector<int64_t>& shape_of(const std::string& value) const;
  Int8Grid grid_of(const std::string& value) const;

  // The graph object (without "constants") and the constants, as write_model_file takes them.
  const nlohmann::json& graph() const { return graph_; }
  const std::vector<ConstantData>& constants() const { return constants_; }
  // Per weighted layer (by name): the weight scale of each output channel. Not written to the
  // file (the multipliers carry them); the ONNX export needs them.
  const std::map<std::string, std::vector<float>>& weight_scales() const { return weight_scales_; }
  std::vector<uint8_t> serialize() const;
  void save(const std::string& path) const;

 private:
  struct Value {
    std::vector<int64_t> shape;
    Int8Grid grid;
  };
  const Value& value(const std::string& name, const std::string& user) const;
  std::string define(const std::string& name, std::vector<int64_t> shape, const Int8Grid& grid);
  void add_constant(ConstantData constant);
  std::string add_weighted(const std::string& op, const std::string& name, const std::string& input,
                           int64_t out_channels, const std::vector<int64_t>& file_weight_shape,
                           const std::vector<int64_t>& pytorch_weight_shape, const float* weight,
                           const float* bias, const std::vector<float>& weight_min,
                           const std::vector<float>& weight_max, int weight_bits,
                           bool weight_narrow_range, Activation activation,
                           const QuantRange& output_range, std::vector<int64_t> output_shape,
                           nlohmann::json node);

  nlohmann::json graph_;
  std::vector<ConstantData> constants_;
  std::map<std::string, Value> values_;
  std::map<std::string, std::vector<float>> weight_scales_;
};

}  // namespace edgeqat::runtime
