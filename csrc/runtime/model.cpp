// edgeqat::runtime::Model: the public API over the plan (model_load.cpp) and the executor
// (model_run.cpp). Argument checks of the run calls live here.
#include "edgeqat/runtime/model.h"

#include <cstdint>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "model_impl.h"

namespace edgeqat::runtime {
namespace {

[[noreturn]] void bad_argument(const std::string& function, const std::string& message) {
  throw std::invalid_argument("edgeqat::runtime::Model::" + function + ": " + message);
}

// The value ids a run returns (outputs, then captures) after checking the run's arguments.
template <class T>
std::vector<int> check_run(const detail::ModelImpl& m, const char* fn,
                           const std::vector<const T*>& inputs, int64_t batch,
                           const std::vector<std::string>& capture) {
  if (inputs.size() != m.input_ids.size()) {
    bad_argument(fn, "expected " + std::to_string(m.input_ids.size()) + " input(s), got " +
                         std::to_string(inputs.size()));
  }
  if (batch < 1) bad_argument(fn, "batch must be >= 1, got " + std::to_string(batch));
  std::vector<int> wanted = m.output_ids;
  for (const std::string& name : capture) {
    const auto it = m.value_index.find(name);
    if (it == m.value_index.end()) bad_argument(fn, "capture names no value: '" + name + "'");
    wanted.push_back(it->second);
  }
  // Every tensor of the call holds batch * numel elements, numel < 2^31: keep it below 2^62
  // elements so that sizes and offsets cannot overflow (the allocation fails long before).
  std::vector<int> sized = wanted;
  sized.insert(sized.end(), m.input_ids.begin(), m.input_ids.end());
  for (int v : sized) {
    if (batch > (int64_t{1} << 62) / m.dims[v].numel) {
      bad_argument(fn, "batch " + std::to_string(batch) + " is too large for value '" +
                           m.values[v].name + "'");
    }
  }
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (inputs[i] == nullptr) {
      bad_argument(fn, "inputs[" + std::to_string(i) + "] ('" + m.values[m.input_ids[i]].name +
                           "') is null");
    }
  }
  return wanted;
}

template <class T>
std::vector<std::vector<T>> run(detail::ModelImpl& m, const char* fn,
                                const std::vector<const T*>& inputs, int64_t batch,
                                const std::vector<std::string>& capture) {
  const std::vector<int> wanted = check_run(m, fn, inputs, batch, capture);
  std::vector<std::vector<T>> results(wanted.size());
  for (size_t r = 0; r < wanted.size(); ++r) {
    results[r].resize(static_cast<size_t>(batch * m.dims[wanted[r]].numel));
  }
  detail::run_model(m, inputs, batch, wanted, results);
  return results;
}

}  // namespace

Model::Model(std::unique_ptr<detail::ModelImpl> impl) : impl_(std::move(impl)) {}
Model::Model(Model&&) noexcept = default;
Model& Model::operator=(Model&&) noexcept = default;
Model::~Model() = default;

Model Model::load(const std::string& path, const ModelOptions& options) {
  return from_file(ModelFile::read(path), options);
}

Model Model::from_file(ModelFile file, const ModelOptions& options) {
  return Model(detail::load_model(std::move(file), options));
}

const std::vector<ValueInfo>& Model::inputs() const { return impl_->input_infos; }
const std::vector<ValueInfo>& Model::outputs() const { return impl_->output_infos; }
const std::vector<ValueInfo>& Model::values() const { return impl_->values; }

const ValueInfo& Model::value(const std::string& name) const {
  const auto it = impl_->value_index.find(name);
  if (it == impl_->value_index.end()) bad_argument("value", "no value named '" + name + "'");
  return impl_->values[it->second];
}

bool Model::has_value(const std::string& name) const { return impl_->value_index.count(name) != 0; }

const std::vector<NodeInfo>& Model::nodes() const { return impl_->nodes; }

std::vector<std::string> Model::node_names() const {
  std::vector<std::string> names;
  names.reserve(impl_->nodes.size());
  for (const NodeInfo& n : impl_->nodes) names.push_back(n.name);
  return names;
}

const std::string& Model::kernels() const { return impl_->kernels_name; }
const std::string& Model::source() const { return impl_->source; }
const ModelFile& Model::file() const { return impl_->file; }
int Model::num_threads() const { return impl_->ctx.num_threads; }

void Model::set_num_threads(int n) {
  if (n < 1) bad_argument("set_num_threads", "n must be >= 1, got " + std::to_string(n));
  impl_->ctx.num_threads = n;
}

size_t Model::activation_bytes() const { return impl_->arena_bytes; }

std::vector<std::vector<int8_t>> Model::run_int8(const std::vector<const int8_t*>& inputs,
                                                 int64_t batch,
                                                 const std::vector<std::string>& capture) {
  return run(*impl_, "run_int8", inputs, batch, capture);
}

std::vector<std::vector<float>> Model::run_float(const std::vector<const float*>& inputs,
                                                 int64_t batch,
                                                 const std::vector<std::string>& capture) {
  return run(*impl_, "run_float", inputs, batch, capture);
}

}  // namespace edgeqat::runtime
