// edgeqat._runtime.Model: the interpreter (edgeqat/runtime/model.h) for
// python/edgeqat/int8_model.py. Arrays are numpy, in the logical PyTorch layout (N, C, H, W) / (N,
// F), C order.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <vector>

#include "edgeqat/runtime/model.h"
#include "python/runtime_bindings.h"

namespace py = pybind11;
namespace rt = edgeqat::runtime;

namespace {

py::dict value_dict(const rt::ValueInfo& v) {
  py::dict d;
  d["name"] = v.name;
  d["shape"] = v.shape;
  d["scale"] = v.scale;
  d["zero_point"] = v.zero_point;
  d["qmin"] = v.qmin;
  d["qmax"] = v.qmax;
  return d;
}

// The batch of the inputs: every array is [batch, *shape of its graph input].
template <class T>
int64_t check_inputs(const rt::Model& model, const std::vector<py::array_t<T>>& arrays) {
  const auto& infos = model.inputs();
  if (arrays.size() != infos.size()) {
    throw py::value_error("the model has " + std::to_string(infos.size()) + " input(s), got " +
                          std::to_string(arrays.size()));
  }
  int64_t batch = -1;
  for (size_t i = 0; i < arrays.size(); ++i) {
    const auto& a = arrays[i];
    const auto& shape = infos[i].shape;
    bool ok = a.ndim() == static_cast<py::ssize_t>(shape.size() + 1) && a.ndim() >= 1;
    for (size_t d = 0; ok && d < shape.size(); ++d) ok = a.shape(d + 1) == shape[d];
    std::string expected = "[N";
    for (int64_t d : shape) expected += ", " + std::to_string(d);
    expected += "]";
    if (!ok) {
      std::string got = "[";
      for (py::ssize_t d = 0; d < a.ndim(); ++d)
        got += (d ? ", " : "") + std::to_string(a.shape(d));
      throw py::value_error("input " + std::to_string(i) + " ('" + infos[i].name +
                            "') must have shape " + expected + ", got " + got + "]");
    }
    if (!(a.flags() & py::array::c_style)) {
      throw py::value_error("input " + std::to_string(i) + " must be C-contiguous");
    }
    if (a.shape(0) < 1) throw py::value_error("the batch must hold at least one sample");
    if (batch >= 0 && a.shape(0) != batch) {
      throw py::value_error("inputs differ in batch size: " + std::to_string(batch) + " and " +
                            std::to_string(a.shape(0)));
    }
    batch = a.shape(0);
  }
  return batch;
}

template <class T>
py::list to_arrays(const rt::Model& model, std::vector<std::vector<T>>&& results, int64_t batch,
                   const std::vector<std::string>& capture) {
  py::list out;
  const size_t n_out = model.outputs().size();
  for (size_t i = 0; i < results.size(); ++i) {
    const rt::ValueInfo& info = i < n_out ? model.outputs()[i] : model.value(capture[i - n_out]);
    std::vector<py::ssize_t> shape{batch};
    for (int64_t d : info.shape) shape.push_back(d);
    py::array_t<T> a(shape);
    std::copy(results[i].begin(), results[i].end(), a.mutable_data());
    out.append(std::move(a));
  }
  return out;
}

template <class T>
py::list run(rt::Model& model, const std::vector<py::array_t<T>>& arrays,
             const std::vector<std::string>& capture) {
  const int64_t batch = check_inputs(model, arrays);
  std::vector<const T*> pointers;
  for (const auto& a : arrays) pointers.push_back(a.data());
  std::vector<std::vector<T>> results;
  {
    py::gil_scoped_release release;
    if constexpr (std::is_same_v<T, float>) {
      results = model.run_float(pointers, batch, capture);
    } else {
      results = model.run_int8(pointers, batch, capture);
    }
  }
  return to_arrays(model, std::move(results), batch, capture);
}

}  // namespace

void bind_model(py::module_& m) {
  // Load / format errors become ValueError with the runtime's message (file, node, field).
  py::register_exception<rt::ModelError>(m, "ModelError", PyExc_ValueError);
  py::register_exception<rt::ModelFileError>(m, "ModelFileError", PyExc_ValueError);
  py::class_<rt::Model>(m, "Model", "A loaded int8 model (edgeqat/runtime/model.h).")
      .def(py::init([](const std::string& path, int num_threads, const std::string& kernels) {
             rt::ModelOptions options;
             options.num_threads = num_threads;
             options.kernels = kernels;
             return rt::Model::load(path, options);
           }),
           py::arg("path"), py::arg("num_threads") = 1, py::arg("kernels") = "fast",
           py::call_guard<py::gil_scoped_release>())
      .def_property_readonly("inputs",
                             [](const rt::Model& model) {
                               py::list l;
                               for (const auto& v : model.inputs()) l.append(value_dict(v));
                               return l;
                             })
      .def_property_readonly("outputs",
                             [](const rt::Model& model) {
                               py::list l;
                               for (const auto& v : model.outputs()) l.append(value_dict(v));
                               return l;
                             })
      .def("value", [](const rt::Model& model,
                       const std::string& name) { return value_dict(model.value(name)); })
      .def_property_readonly("nodes",
                             [](const rt::Model& model) {
                               py::list l;
                               for (const auto& n : model.nodes()) {
                                 py::dict d;
                                 d["name"] = n.name;
                                 d["op"] = n.op;
                                 d["inputs"] = n.inputs;
                                 d["output"] = n.output;
                                 l.append(d);
                               }
                               return l;
                             })
      .def_property_readonly("kernels", &rt::Model::kernels)
      .def_property("num_threads", &rt::Model::num_threads, &rt::Model::set_num_threads)
      .def_property_readonly("header_json",
                             [](const rt::Model& model) { return model.file().header().dump(); })
      .def("run_int8", &run<int8_t>, py::arg("inputs"),
           py::arg("capture") = std::vector<std::string>{})
      .def("run_float", &run<float>, py::arg("inputs"),
           py::arg("capture") = std::vector<std::string>{});
}
