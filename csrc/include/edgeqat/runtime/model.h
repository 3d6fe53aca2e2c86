// The int8 interpreter: loads a model file (docs/int8-format.md), checks the whole graph once and
// runs it with integer kernels only (float appears at the graph boundary: quantize the inputs,
// dequantize the outputs).
//
// Loading checks every field of the header against the format document (JSON types, names,
// definition order, shapes recomputed from the attributes, constants' dtypes and shapes,
// multiplier / shift ranges, clamps inside the output grid, pool / flatten keeping their input's
// scale and zero point ...) and throws ModelError naming the node (or value) and the attribute.
// It then builds an execution plan: per node the kernel's params struct, its fixed-point
// multipliers and its weights in the kernel's layout (prepacked for the fast kernels), validated
// once with checks.h so that running does not re-check.
//
// Running: activations are NHWC int8 inside, in one arena whose slots are reused by values whose
// lifetimes do not overlap (a value's slot is free after its last reader), planned once per batch
// size and kept for later runs of the same size. Callers see the logical PyTorch layout:
// (N, C, H, W) or (N, F), row-major. Results never depend on the kernels ("reference" and "fast"
// agree bit for bit) nor on the thread count.
//
//   namespace rt = edgeqat::runtime;
//   rt::Model model = rt::Model::load("model.eq8", {/*num_threads=*/4});
//   const rt::ValueInfo& in = model.inputs()[0];          // e.g. shape [3, 32, 32]
//   std::vector<float> x(batch * in.numel());            // NCHW
//   std::vector<std::vector<float>> y = model.run_float({x.data()}, batch);
//   // int8 in and out, plus an intermediate value ("layer1.conv1" is a value name):
//   auto q = model.run_int8({xq.data()}, batch, {"layer1.conv1"});  // q[outputs..., captures...]
//
// A Model is movable, not copyable (a moved-from Model may only be assigned or destroyed). One
// Model runs one call at a time (the arena and the thread pool are its own): use one Model per
// thread to run concurrently.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "edgeqat/runtime/model_file.h"

namespace edgeqat::runtime {

// One activation tensor of the graph: real = (q - zero_point) * scale.
struct ValueInfo {
  std::string name;
  std::vector<int64_t> shape;  // one sample, batch excluded: [C, H, W] or [F]
  float scale = 1.0f;
  int32_t zero_point = 0;
  int32_t qmin = -128, qmax = 127;  // the int8 values the tensor's grid can take

  // Elements of one sample (product of shape).
  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
};

// One node as the file lists it (execution order).
struct NodeInfo {
  std::string name;  // the module path it came from
  std::string op;    // "conv2d", "fully_connected", "add", ...
  std::vector<std::string> inputs;
  std::string output;
};

struct ModelOptions {
  int num_threads = 1;  // >= 1; threads used by the fast kernels
  // "fast" (the best instruction set of this CPU, capped by EDGEQAT_RUNTIME_ISA, resolved at
  // load time), "fast/<isa>" (fast::available_isas()) or "reference".
  std::string kernels = "fast";
  // Most samples run through the graph at once (>= 0; 0: the whole batch, as far as the
  // kernels' int sizes allow). Larger batches run in chunks of this size, which bounds the
  // activation memory (activation_bytes()); results do not depend on it.
  int64_t max_batch_chunk = 0;
};

// A model file whose graph fails a check. what() is
//   "edgeqat int8 model '<source>': node 3 'layer1.conv' (conv2d), attribute 'stride': ..."
// (or "value 'x' (values[2]), field 'scale': ...", "header field 'inputs': ...").
// Errors of the container itself (magic, CRC, constants table, I/O) are ModelFileError.
class ModelError : public std::runtime_error {
 public:
  ModelError(const std::string& source, const std::string& message);
  // The path, or the source name the ModelFile was parsed with ("<memory>").
  const std::string& source() const { return source_; }

 private:
  std::string source_;
};

namespace detail {
struct ModelImpl;
}  // namespace detail

class Model {
 public:
  // Reads and checks the file (ModelFileError for the container, ModelError for the graph).
  // std::invalid_argument for bad options (unknown kernels name, num_threads < 1).
  static Model load(const std::string& path, const ModelOptions& options = {});
  // The same from a file already read (e.g. ModelFile::parse on bytes in memory). The Model
  // keeps the file: its constants are the weights the kernels read.
  static Model from_file(ModelFile file, const ModelOptions& options = {});

  Model(Model&&) noexcept;
  Model& operator=(Model&&) noexcept;
  ~Model();
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  // The graph inputs / outputs, in the file's order.
  const std::vector<ValueInfo>& inputs() const;
  const std::vector<ValueInfo>& outputs() const;
  // Every value of the file (inputs and node outputs), in the file's "values" order.
  const std::vector<ValueInfo>& values() const;
  // Throws std::invalid_argument if there is no such value.
  const ValueInfo& value(const std::string& name) const;
  bool has_value(const std::string& name) const;
  const std::vector<NodeInfo>& nodes() const;
  std::vector<std::string> node_names() const;

  // The kernel table in use, resolved: "reference" or "fast/<isa>".
  const std::string& kernels() const;
  const std::string& source() const;
  // The file (header JSON, constants).
  const ModelFile& file() const;

  int num_threads() const;
  // n >= 1 (std::invalid_argument otherwise). Results do not depend on it.
  void set_num_threads(int n);

  // Runs `batch` >= 1 samples. inputs[i] points to batch * inputs()[i].numel() int8 values in
  // the logical layout (N, C, H, W) / (N, F). Returns the outputs (same layout), then one tensor
  // per name in `capture` (any value: an input or a node output). Throws std::invalid_argument
  // for a wrong input count, a null pointer, batch < 1 or an unknown capture name.
  std::vector<std::vector<int8_t>> run_int8(const std::vector<const int8_t*>& inputs, int64_t batch,
                                            const std::vector<std::string>& capture = {});
  // Float in: each input quantized with its scale and zero point (round half to even, like ONNX
  // QuantizeLinear: the quantize kernel); float out: outputs and captures dequantized.
  std::vector<std::vector<float>> run_float(const std::vector<const float*>& inputs, int64_t batch,
                                            const std::vector<std::string>& capture = {});
  // Bytes of the activation arena planned for the last run (0 before the first run): the peak
  // activation memory of a run of that batch size, thanks to the liveness-based slot reuse.
  size_t activation_bytes() const;

 private:
  explicit Model(std::unique_ptr<detail::ModelImpl> impl);
  std::unique_ptr<detail::ModelImpl> impl_;
};

}  // namespace edgeqat::runtime
