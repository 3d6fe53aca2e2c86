// edgeqat_nn_parity: runs the C++ side of tests/python/test_cpp_parity.py.
//
//   edgeqat_nn_parity INPUT OUTPUT
//
// INPUT is a torch.save'd dict of tensors written by the Python test:
//   config        int64 [steps, freeze_bn_at, learn_at, mid_at, num_threads, seed]
//   hyper         float64 [lr, momentum]
//   x, y          the training batches, [steps, N, 3, 8, 8] and [steps, N]
//   eval_x        a batch for the final eval-mode forward
//   state.<name>  a state_dict of the Python QatNet, taken mid-training
//   momentum.<name>  the SGD momentum buffers of that run, by parameter name
// The program builds edgeqat_test::QatNet (nn_test_model.h), records its
// initial weights for `seed` (init.<name>), copies state.* in by name (the
// name sets must be equal), restores the momentum buffers, and runs `steps`
// SGD steps in training mode with freeze_bn at step freeze_bn_at and
// learn_ranges at step learn_at, then one eval-mode forward. OUTPUT (read with
// torch.load) holds
//   init.<name>, loss [steps], outputs [steps, N, classes], eval_out,
//   mid.state.<name>, mid.momentum.<name>   (before step mid_at),
//   final.state.<name>, final.momentum.<name>.
#include <torch/torch.h>

#include <cstdio>
#include <exception>
#include <fstream>
#include <iterator>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "edgeqat/edgeqat.h"
#include "nn_test_model.h"

namespace {

using torch::Tensor;
using TensorMap = std::map<std::string, Tensor>;

TensorMap read_dict(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  TORCH_CHECK(file, "cannot open ", path);
  const std::vector<char> bytes((std::istreambuf_iterator<char>(file)),
                                std::istreambuf_iterator<char>());
  const auto value = torch::pickle_load(bytes);
  TORCH_CHECK(value.isGenericDict(), path, ": expected a dict, got ", value.tagKind());
  TensorMap out;
  for (const auto& item : value.toGenericDict()) {
    TORCH_CHECK(item.key().isString(), path, ": keys must be strings");
    TORCH_CHECK(item.value().isTensor(), path, ": ", item.key().toStringRef(), " is not a tensor");
    out[item.key().toStringRef()] = item.value().toTensor();
  }
  return out;
}

void write_dict(const std::string& path, const TensorMap& values) {
  c10::Dict<std::string, Tensor> dict;
  for (const auto& [key, value] : values) dict.insert(key, value);
  const auto bytes = torch::pickle_save(dict);
  std::ofstream file(path, std::ios::binary);
  TORCH_CHECK(file, "cannot write ", path);
  file.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

const Tensor& get(const TensorMap& map, const std::string& key) {
  const auto it = map.find(key);
  TORCH_CHECK(it != map.end(), "the input has no entry '", key, "'");
  return it->second;
}

// Every parameter and buffer by name.
TensorMap state_of(const torch::nn::Module& model) {
  TensorMap state;
  for (const auto& p : model.named_parameters()) state[p.key()] = p.value().detach().clone();
  for (const auto& b : model.named_buffers()) state[b.key()] = b.value().clone();
  return state;
}

// Copies `prefix<name>` entries into the model's parameters and buffers; the
// name sets must match exactly, shapes and dtypes too.
void load_state(torch::nn::Module& model, const TensorMap& input, const std::string& prefix) {
  std::map<std::string, Tensor> targets;
  for (const auto& p : model.named_parameters()) targets[p.key()] = p.value();
  for (const auto& b : model.named_buffers()) targets[b.key()] = b.value();
  std::set<std::string> given;
  for (const auto& [key, value] : input) {
    if (key.rfind(prefix, 0) == 0) given.insert(key.substr(prefix.size()));
  }
  std::string missing, unexpected;
  for (const auto& [name, t] : targets) {
    if (!given.count(name)) missing += " " + name;
  }
  for (const auto& name : given) {
    if (!targets.count(name)) unexpected += " " + name;
  }
  TORCH_CHECK(missing.empty() && unexpected.empty(),
              "state names differ between Python and C++; missing in Python:", missing,
              "; unknown to C++:", unexpected);
  torch::NoGradGuard no_grad;
  for (auto& [name, target] : targets) {
    const auto& source = get(input, prefix + name);
    TORCH_CHECK(source.sizes() == target.sizes() && source.dtype() == target.dtype(), name,
                ": Python has ", source.sizes(), " ", source.dtype(), ", C++ has ", target.sizes(),
                " ", target.dtype());
    target.copy_(source);
  }
}

TensorMap momentum_of(const torch::nn::Module& model, torch::optim::SGD& opt) {
  TensorMap out;
  for (const auto& p : model.named_parameters()) {
    const auto it = opt.state().find(p.value().unsafeGetTensorImpl());
    if (it == opt.state().end()) continue;
    const auto& s = static_cast<const torch::optim::SGDParamState&>(*it->second);
    out[p.key()] = s.momentum_buffer().clone();
  }
  return out;
}

void set_momentum(const torch::nn::Module& model, torch::optim::SGD& opt, const TensorMap& input) {
  const std::string prefix = "momentum.";
  const auto params = model.named_parameters();
  for (const auto& [key, value] : input) {
    if (key.rfind(prefix, 0) != 0) continue;
    const auto name = key.substr(prefix.size());
    const auto* param = params.find(name);
    TORCH_CHECK(param != nullptr, "momentum buffer for an unknown parameter ", name);
    auto state = std::make_unique<torch::optim::SGDParamState>();
    state->momentum_buffer(value.clone());
    opt.state()[param->unsafeGetTensorImpl()] = std::move(state);
  }
}

void put(TensorMap& out, const std::string& prefix, const TensorMap& values) {
  for (const auto& [key, value] : values) out[prefix + key] = value;
}

int run(const std::string& input_path, const std::string& output_path) {
  const auto input = read_dict(input_path);
  const auto config = get(input, "config");
  const auto hyper = get(input, "hyper");
  const int64_t steps = config[0].item<int64_t>();
  const int64_t freeze_bn_at = config[1].item<int64_t>();
  const int64_t learn_at = config[2].item<int64_t>();
  const int64_t mid_at = config[3].item<int64_t>();
  torch::set_num_threads(static_cast<int>(config[4].item<int64_t>()));
  const double lr = hyper[0].item<double>();
  const double momentum = hyper[1].item<double>();
  const auto& x = get(input, "x");
  const auto& y = get(input, "y");
  const auto& eval_x = get(input, "eval_x");

  TensorMap out;
  torch::manual_seed(config[5].item<int64_t>());
  edgeqat_test::QatNet model;
  put(out, "init.", state_of(*model));

  load_state(*model, input, "state.");
  torch::optim::SGD opt(model->parameters(), torch::optim::SGDOptions(lr).momentum(momentum));
  set_momentum(*model, opt, input);

  std::vector<Tensor> losses, outputs;
  model->train();
  for (int64_t step = 0; step < steps; ++step) {
    if (step == freeze_bn_at) edgeqat::nn::freeze_bn(model);
    if (step == learn_at) edgeqat::nn::learn_ranges(model);
    if (step == mid_at) {
      put(out, "mid.state.", state_of(*model));
      put(out, "mid.momentum.", momentum_of(*model, opt));
    }
    opt.zero_grad();
    const auto logits = model(x[step]);
    const auto loss = torch::nn::functional::cross_entropy(logits, y[step]);
    loss.backward();
    opt.step();
    losses.push_back(loss.detach());
    outputs.push_back(logits.detach());
  }
  out["loss"] = torch::stack(losses);
  out["outputs"] = torch::stack(outputs);
  put(out, "final.state.", state_of(*model));
  put(out, "final.momentum.", momentum_of(*model, opt));
  model->eval();
  {
    torch::NoGradGuard no_grad;
    out["eval_out"] = model(eval_x);
  }
  write_dict(output_path, out);
  std::printf("edgeqat_nn_parity: %lld steps, last loss %.6f\n", static_cast<long long>(steps),
              losses.empty() ? 0.0 : losses.back().item<double>());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s INPUT OUTPUT\n", argv[0]);
    return 2;
  }
  try {
    return run(argv[1], argv[2]);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "edgeqat_nn_parity: %s\n", e.what());
    return 1;
  }
}
