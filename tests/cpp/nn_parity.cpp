// edgeqat_nn_parity: runs the C++ side of tests/python/test_cpp_parity.py.
//
//   edgeqat_nn_parity INPUT OUTPUT
//   edgeqat_nn_parity --histogram INPUT OUTPUT
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
// learn_ranges at step learn_at (started by an edgeqat::nn::QATScheduler, as
// Python calls the controls by hand), then one eval-mode forward. OUTPUT (read
// with torch.load) holds
//   init.<name>, loss [steps], outputs [steps, N, classes], eval_out,
//   mid.state.<name>, mid.momentum.<name>   (before step mid_at),
//   final.state.<name>, final.momentum.<name>.
//
// --histogram: a histogram calibration. INPUT holds
//   specs         float64 [k, 6], one quantizer spec a row: histogram_bins,
//                 method (0 mse, 1 percentile), percentile, num_bits,
//                 narrow_range, symmetric (range_source histogram, per tensor)
//   x             the calibration batches still to run, [steps, ...]
//   eval_x        a batch for the eval-mode forward after the freeze
//   state.<name>  the Python calibrators' state mid-calibration ("q<i>.histogram", ...)
// The program builds one FakeQuantizer a spec as submodules q0 .. q<k-1>
// (init.<name>: their fresh state), copies state.* in by name, runs every
// batch through every quantizer in training mode (identity [steps, k]: 1 where
// the output was the input tensor itself), writes calibrated.state.<name>,
// freezes them (the range is chosen), writes frozen.state.<name> and
// eval_out.q<i> (q<i>(eval_x) in eval mode).
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

  // Not attached (Python's QatNet has no qat_schedule): a standalone scheduler.
  edgeqat::nn::QATScheduler schedule(
      model, edgeqat::nn::QATSchedule().freeze_bn_step(freeze_bn_at).learn_ranges_step(learn_at));
  std::vector<Tensor> losses, outputs;
  model->train();
  for (int64_t step = 0; step < steps; ++step) {
    schedule();  // freeze_bn at freeze_bn_at, learn_ranges at learn_at
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

int run_histogram(const std::string& input_path, const std::string& output_path) {
  namespace qnn = edgeqat::nn;
  const auto input = read_dict(input_path);
  const auto specs = get(input, "specs");
  const auto& x = get(input, "x");
  const auto& eval_x = get(input, "eval_x");
  TORCH_CHECK(specs.dim() == 2 && specs.size(1) == 6, "specs must be [k, 6], got ", specs.sizes());

  torch::nn::Module calibrators;
  std::vector<qnn::FakeQuantizer> quantizers;
  for (int64_t i = 0; i < specs.size(0); ++i) {
    const auto row = specs[i];
    const auto spec =
        qnn::QuantSpec()
            .range_source(qnn::RangeSource::Histogram)
            .histogram_bins(row[0].item<int64_t>())
            .histogram_method(row[1].item<int64_t>() == 0 ? qnn::HistogramMethod::Mse
                                                          : qnn::HistogramMethod::Percentile)
            .percentile(row[2].item<double>())
            .num_bits(row[3].item<int64_t>())
            .narrow_range(row[4].item<double>() != 0.0)
            .symmetric(row[5].item<double>() != 0.0);
    quantizers.push_back(
        calibrators.register_module("q" + std::to_string(i), qnn::FakeQuantizer(spec)));
  }
  TensorMap out;
  put(out, "init.", state_of(calibrators));
  load_state(calibrators, input, "state.");

  calibrators.train();
  auto identity = torch::zeros({x.size(0), specs.size(0)}, torch::kLong);
  for (int64_t step = 0; step < x.size(0); ++step) {
    const auto batch = x[step];
    for (size_t i = 0; i < quantizers.size(); ++i) {
      identity[step][static_cast<int64_t>(i)] = quantizers[i](batch).is_same(batch) ? 1 : 0;
    }
  }
  out["identity"] = identity;
  put(out, "calibrated.state.", state_of(calibrators));
  for (auto& q : quantizers) q->freeze();
  put(out, "frozen.state.", state_of(calibrators));
  calibrators.eval();
  for (size_t i = 0; i < quantizers.size(); ++i) {
    out["eval_out.q" + std::to_string(i)] = quantizers[i](eval_x);
  }
  write_dict(output_path, out);
  std::printf("edgeqat_nn_parity --histogram: %lld quantizers, %lld batches\n",
              static_cast<long long>(specs.size(0)), static_cast<long long>(x.size(0)));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const bool histogram = argc == 4 && std::string(argv[1]) == "--histogram";
  if (argc != 3 && !histogram) {
    std::fprintf(stderr, "usage: %s [--histogram] INPUT OUTPUT\n", argv[0]);
    return 2;
  }
  try {
    if (histogram) return run_histogram(argv[2], argv[3]);
    return run(argv[1], argv[2]);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "edgeqat_nn_parity: %s\n", e.what());
    return 1;
  }
}
