// edgeqat._runtime.GraphBuilder: the exporter's core (edgeqat/runtime/builder.h) for
// python/edgeqat/export.py. Arrays arrive as numpy float32 (C order); ranges as
// (min, max, num_bits, narrow_range) tuples; activations as None / "relu" / "relu6".
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <cstring>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "edgeqat/runtime/builder.h"
#include "python/runtime_bindings.h"

namespace py = pybind11;
namespace rt = edgeqat::runtime;

namespace {

using FloatArray = py::array_t<float, py::array::c_style | py::array::forcecast>;
using RangeTuple = std::tuple<double, double, int, bool>;

rt::QuantRange quant_range(const RangeTuple& t) {
  // Python floats holding float32 values (the quantizer's range) convert back exactly.
  return {static_cast<float>(std::get<0>(t)), static_cast<float>(std::get<1>(t)), std::get<2>(t),
          std::get<3>(t)};
}

rt::Activation activation(const std::optional<std::string>& name) {
  if (!name || *name == "none") return rt::Activation::kNone;
  if (*name == "relu") return rt::Activation::kRelu;
  if (*name == "relu6") return rt::Activation::kRelu6;
  throw py::value_error("activation must be None, 'relu' or 'relu6', got '" + *name + "'");
}

std::vector<float> to_vector(const FloatArray& a) {
  return std::vector<float>(a.data(), a.data() + a.size());
}

const float* bias_pointer(const std::optional<FloatArray>& bias, int64_t channels,
                          const std::string& name) {
  if (!bias) return nullptr;
  if (bias->ndim() != 1 || bias->shape(0) != channels) {
    throw py::value_error(name + ": bias must have shape [" + std::to_string(channels) + "]");
  }
  return bias->data();
}

void check_ranges(const FloatArray& lo, const FloatArray& hi, int64_t channels,
                  const std::string& name) {
  if (lo.size() != hi.size() || (lo.size() != 1 && lo.size() != channels)) {
    throw py::value_error(name + ": weight_min / weight_max must have 1 or " +
                          std::to_string(channels) + " entries, got " + std::to_string(lo.size()) +
                          " and " + std::to_string(hi.size()));
  }
}

std::string add_conv2d(rt::GraphBuilder& b, const std::string& name, const std::string& input,
                       const FloatArray& weight, const std::optional<FloatArray>& bias,
                       const FloatArray& weight_min, const FloatArray& weight_max, int weight_bits,
                       bool weight_narrow_range, std::array<int, 2> stride,
                       std::array<int, 4> padding, std::array<int, 2> dilation, int groups,
                       const std::optional<std::string>& act, const RangeTuple& output_range) {
  if (weight.ndim() != 4) throw py::value_error(name + ": conv weight must be 4-D [O, I, KH, KW]");
  rt::ConvLayer layer;
  layer.name = name;
  for (int i = 0; i < 4; ++i) layer.weight_shape[static_cast<size_t>(i)] = weight.shape(i);
  check_ranges(weight_min, weight_max, weight.shape(0), name);
  layer.weight = weight.data();
  layer.bias = bias_pointer(bias, weight.shape(0), name);
  layer.weight_min = to_vector(weight_min);
  layer.weight_max = to_vector(weight_max);
  layer.weight_bits = weight_bits;
  layer.weight_narrow_range = weight_narrow_range;
  layer.stride = stride;
  layer.padding = padding;
  layer.dilation = dilation;
  layer.groups = groups;
  layer.activation = activation(act);
  return b.add_conv2d(layer, input, quant_range(output_range));
}

std::string add_fully_connected(rt::GraphBuilder& b, const std::string& name,
                                const std::string& input, const FloatArray& weight,
                                const std::optional<FloatArray>& bias, const FloatArray& weight_min,
                                const FloatArray& weight_max, int weight_bits,
                                bool weight_narrow_range, const std::optional<std::string>& act,
                                const RangeTuple& output_range) {
  if (weight.ndim() != 2) throw py::value_error(name + ": linear weight must be 2-D [O, I]");
  rt::LinearLayer layer;
  layer.name = name;
  layer.weight_shape = {weight.shape(0), weight.shape(1)};
  check_ranges(weight_min, weight_max, weight.shape(0), name);
  layer.weight = weight.data();
  layer.bias = bias_pointer(bias, weight.shape(0), name);
  layer.weight_min = to_vector(weight_min);
  layer.weight_max = to_vector(weight_max);
  layer.weight_bits = weight_bits;
  layer.weight_narrow_range = weight_narrow_range;
  layer.activation = activation(act);
  return b.add_fully_connected(layer, input, quant_range(output_range));
}

}  // namespace

void bind_graph_builder(py::module_& m) {
  py::class_<rt::GraphBuilder>(m, "GraphBuilder",
                               "Builds an int8 model file from float layers and fake-quant "
                               "ranges (edgeqat/runtime/builder.h; used by edgeqat.export).")
      .def(py::init<std::string>(), py::arg("producer"))
      .def(
          "add_input",
          [](rt::GraphBuilder& b, const std::string& name, const std::vector<int64_t>& shape,
             const RangeTuple& range) { return b.add_input(name, shape, quant_range(range)); },
          py::arg("name"), py::arg("shape"), py::arg("range"))
      .def("add_conv2d", &add_conv2d, py::arg("name"), py::arg("input"), py::arg("weight"),
           py::arg("bias"), py::arg("weight_min"), py::arg("weight_max"), py::arg("weight_bits"),
           py::arg("weight_narrow_range"), py::arg("stride"), py::arg("padding"),
           py::arg("dilation"), py::arg("groups"), py::arg("activation"), py::arg("output_range"))
      .def("add_fully_connected", &add_fully_connected, py::arg("name"), py::arg("input"),
           py::arg("weight"), py::arg("bias"), py::arg("weight_min"), py::arg("weight_max"),
           py::arg("weight_bits"), py::arg("weight_narrow_range"), py::arg("activation"),
           py::arg("output_range"))
      .def(
          "add_add",
          [](rt::GraphBuilder& b, const std::string& name, const std::string& x,
             const std::string& y, const std::optional<std::string>& act, const RangeTuple& range) {
            return b.add_add(name, x, y, activation(act), quant_range(range));
          },
          py::arg("name"), py::arg("a"), py::arg("b"), py::arg("activation"),
          py::arg("output_range"))
      .def("add_average_pool2d", &rt::GraphBuilder::add_average_pool2d, py::arg("name"),
           py::arg("input"), py::arg("kernel"), py::arg("stride"), py::arg("padding"))
      .def("add_max_pool2d", &rt::GraphBuilder::add_max_pool2d, py::arg("name"), py::arg("input"),
           py::arg("kernel"), py::arg("stride"), py::arg("padding"))
      .def("add_flatten", &rt::GraphBuilder::add_flatten, py::arg("name"), py::arg("input"))
      .def(
          "add_concat",
          [](rt::GraphBuilder& b, const std::string& name, const std::vector<std::string>& inputs,
             const RangeTuple& range) { return b.add_concat(name, inputs, quant_range(range)); },
          py::arg("name"), py::arg("inputs"), py::arg("output_range"))
      .def("mark_output", &rt::GraphBuilder::mark_output, py::arg("value"))
      .def("has_value", &rt::GraphBuilder::has_value, py::arg("name"))
      .def("shape_of", &rt::GraphBuilder::shape_of, py::arg("value"))
      .def(
          "grid_of",
          [](const rt::GraphBuilder& b, const std::string& v) {
            const rt::Int8Grid g = b.grid_of(v);
            return py::make_tuple(g.scale, g.zero_point, g.qmin, g.qmax);
          },
          py::arg("value"), "(scale, zero_point, qmin, qmax) of a value")
      .def("graph_json", [](const rt::GraphBuilder& b) { return b.graph().dump(); })
      .def(
          "constants",
          [](const rt::GraphBuilder& b) {
            // name -> numpy array (a copy) of the constants the file will hold.
            py::dict out;
            for (const auto& c : b.constants()) {
              const py::dtype dtype = c.dtype == rt::DType::kInt8    ? py::dtype::of<int8_t>()
                                      : c.dtype == rt::DType::kInt32 ? py::dtype::of<int32_t>()
                                                                     : py::dtype::of<float>();
              py::array a(dtype, std::vector<py::ssize_t>(c.shape.begin(), c.shape.end()));
              std::memcpy(a.mutable_data(), c.bytes.data(), c.bytes.size());
              out[py::str(c.name)] = a;
            }
            for (const auto& [layer, scales] : b.weight_scales()) {
              out[py::str(layer + ".weight_scale")] =
                  py::array_t<float>(static_cast<py::ssize_t>(scales.size()), scales.data());
            }
            return out;
          },
          "name -> numpy array of every constant of the file (weight OHWI int8, bias int32, "
          "multiplier int32, shift int8), plus '<layer>.weight_scale' float32 [O] per weighted "
          "layer, which the file does not hold (the multipliers carry it)")
      .def("serialize",
           [](const rt::GraphBuilder& b) {
             const std::vector<uint8_t> bytes = b.serialize();
             return py::bytes(reinterpret_cast<const char*>(bytes.data()), bytes.size());
           })
      .def("save", &rt::GraphBuilder::save, py::arg("path"),
           py::call_guard<py::gil_scoped_release>());
}
