// QAT on real data from C++, no Python anywhere: edgeqat's C++ twin of
// examples/python/qat_fashion_mnist.py.
//
// 1. Builds a small CNN from edgeqat::nn blocks (a torch::nn::Sequential that edgeqat::export_int8
//    accepts: conv-bn-relu blocks, max pool, a residual block, global average pool, linear) and
//    trains it in float on Fashion-MNIST, every quantizer Off (plain float convs, BN, ReLUs).
// 2. QAT from those float weights: quantizers switched on (Observe), ranges calibrated on a few
//    training batches, then fine-tuned with 8-bit fake quantization; an attached
//    edgeqat::nn::QATSchedule freezes batch norm half way and the observed ranges for the last
//    quarter, so the export sees what training saw.
// 3. Exports the int8 model (edgeqat::export_int8, <out>/qat.eq8) and runs it in the torch-free
//    runtime (edgeqat::runtime::Model).
//
// Prints float / QAT simulation / int8 runtime accuracies on the 10k test images, and the top-1
// agreement of the int8 model with the simulation.
//
// Data: the four Fashion-MNIST IDX files from --data, else $EDGEQAT_FASHION_MNIST, else
// /usr/share/datasets/fashion-mnist (Debian's dataset-fashion-mnist). Each file is read as
// <name>.gz (gzip, what Debian installs) or <name> (already unzipped), with zlib, in place:
// nothing is unpacked or written next to the data.
//
//   train_qat --help
#include <torch/torch.h>
#include <zlib.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "edgeqat/edgeqat.h"
#include "edgeqat/runtime/model.h"

namespace {

namespace fs = std::filesystem;
namespace qnn = edgeqat::nn;

constexpr const char* kDefaultData = "/usr/share/datasets/fashion-mnist";
constexpr float kMean = 0.2860f, kStd = 0.3530f;  // of the training images (pixel / 255)
constexpr double kFloatLr = 3e-3, kQatLr = 1e-4;  // Adam, cosine decay to 0
constexpr int64_t kEvalBatch = 1000;
constexpr int64_t kCalibrationBatch = 256;
constexpr int64_t kClasses = 10;

// -- options --------------------------------------------------------------------------------------

struct Options {
  std::string data;  // empty: $EDGEQAT_FASHION_MNIST or kDefaultData
  int64_t float_steps = 1500;
  int64_t qat_steps = 400;
  int64_t batch = 128;
  int64_t calibration_batches = 16;
  int64_t threads = 2;
  int64_t log_every = 100;
  uint64_t seed = 0;
  std::string out = (fs::temp_directory_path() / "edgeqat-train-qat").string();
};

const char* kUsage = R"(usage: train_qat [options]

QAT on Fashion-MNIST with edgeqat's C++ modules: float training, QAT fine-tuning from the float
weights (BN then observers frozen on a schedule), int8 export, int8 evaluation in the torch-free
runtime. Accuracies are on the 10k test images.

options:
  --data DIR                 folder with the four IDX files, gzipped (*.gz) or not
                             (default: $EDGEQAT_FASHION_MNIST, else /usr/share/datasets/fashion-mnist)
  --float-steps N            float training steps (default 1500)
  --qat-steps N              QAT fine-tuning steps (default 400)
  --batch N                  training batch size (default 128)
  --calibration-batches N    batches of 256 training images that set the initial ranges (default 16)
  --threads N                LibTorch and int8 runtime threads (default 2)
  --log-every N              print the loss every N steps (default 100)
  --seed N                   random seed (default 0)
  --out DIR                  where float.pt, qat.pt and qat.eq8 go (default: <temp dir>/edgeqat-train-qat)
  --help                     this text
)";

int64_t parse_int(const std::string& flag, const std::string& value, int64_t min) {
  size_t used = 0;
  int64_t v = 0;
  try {
    v = std::stoll(value, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != value.size() || v < min) {
    throw std::invalid_argument(flag + " wants an integer >= " + std::to_string(min) + ", got '" +
                                value + "'");
  }
  return v;
}

Options parse_options(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--help" || flag == "-h") {
      std::cout << kUsage;
      std::exit(0);
    }
    if (i + 1 >= argc) throw std::invalid_argument("unknown option or missing value: " + flag);
    const std::string value = argv[++i];
    if (flag == "--data") {
      o.data = value;
    } else if (flag == "--out") {
      o.out = value;
    } else if (flag == "--float-steps") {
      o.float_steps = parse_int(flag, value, 1);
    } else if (flag == "--qat-steps") {
      o.qat_steps = parse_int(flag, value, 1);
    } else if (flag == "--batch") {
      o.batch = parse_int(flag, value, 1);
    } else if (flag == "--calibration-batches") {
      o.calibration_batches = parse_int(flag, value, 1);
    } else if (flag == "--threads") {
      o.threads = parse_int(flag, value, 1);
    } else if (flag == "--log-every") {
      o.log_every = parse_int(flag, value, 1);
    } else if (flag == "--seed") {
      o.seed = static_cast<uint64_t>(parse_int(flag, value, 0));
    } else {
      throw std::invalid_argument("unknown option: " + flag + " (see --help)");
    }
  }
  if (o.data.empty()) {
    const char* env = std::getenv("EDGEQAT_FASHION_MNIST");
    o.data = env && *env ? env : kDefaultData;
  }
  return o;
}

// -- data -----------------------------------------------------------------------------------------

struct DatasetError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The bytes of <dir>/<name>.gz (gunzipped) or else <dir>/<name> (zlib's gzread passes a file
// that is not gzip through as it is).
std::pair<std::vector<uint8_t>, std::string> read_file(const std::string& dir,
                                                       const std::string& name) {
  std::string path = (fs::path(dir) / (name + ".gz")).string();
  if (!fs::exists(path)) path = (fs::path(dir) / name).string();
  if (!fs::exists(path)) {
    throw DatasetError(
        "Fashion-MNIST file not found: " + (fs::path(dir) / (name + ".gz")).string() +
        " (nor unzipped, " + name +
        ")\n  install Debian's dataset-fashion-mnist (sudo apt-get install dataset-fashion-mnist; "
        "it puts the files in " +
        kDefaultData +
        "),\n  or point --data or EDGEQAT_FASHION_MNIST at a folder holding "
        "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and "
        "t10k-labels-idx1-ubyte (each gzipped as .gz, or not)");
  }
  gzFile f = gzopen(path.c_str(), "rb");
  if (!f) throw DatasetError("cannot open " + path);
  std::vector<uint8_t> bytes;
  std::vector<uint8_t> chunk(1 << 20);
  while (true) {
    const int n = gzread(f, chunk.data(), static_cast<unsigned>(chunk.size()));
    if (n < 0) {
      int code = 0;
      const std::string message = gzerror(f, &code);
      gzclose(f);
      throw DatasetError("cannot read " + path + ": not a valid gzip file (" + message + ")");
    }
    if (n == 0) break;
    bytes.insert(bytes.end(), chunk.begin(), chunk.begin() + n);
  }
  gzclose(f);
  return {std::move(bytes), path};
}

// An unsigned-byte IDX file as a uint8 tensor of its shape; every header field checked.
torch::Tensor read_idx(const std::string& dir, const std::string& name, int expected_ndim) {
  auto [raw, path] = read_file(dir, name);
  if (raw.size() < 4) throw DatasetError(path + ": too short for an IDX header");
  if (raw[0] != 0 || raw[1] != 0 || raw[2] != 0x08 || raw[3] != expected_ndim) {
    throw DatasetError(path + ": not an unsigned-byte IDX file with " +
                       std::to_string(expected_ndim) + " dimension(s)");
  }
  const size_t header = 4 + 4 * static_cast<size_t>(expected_ndim);
  if (raw.size() < header) throw DatasetError(path + ": truncated header");
  std::vector<int64_t> shape;
  int64_t count = 1;
  for (int d = 0; d < expected_ndim; ++d) {
    const uint8_t* p = raw.data() + 4 + 4 * d;
    const int64_t size =
        (int64_t{p[0]} << 24) | (int64_t{p[1]} << 16) | (int64_t{p[2]} << 8) | p[3];
    shape.push_back(size);
    count *= size;
  }
  if (static_cast<int64_t>(raw.size() - header) != count) {
    throw DatasetError(path + ": the header announces " + std::to_string(count) +
                       " bytes of data, the file holds " + std::to_string(raw.size() - header));
  }
  return torch::from_blob(raw.data() + header, shape, torch::kUInt8).clone();
}

struct Split {
  torch::Tensor images;  // [N, 1, 28, 28] float, normalized
  torch::Tensor labels;  // [N] int64
};

Split load_split(const std::string& dir, const std::string& prefix) {
  auto images = read_idx(dir, prefix + "-images-idx3-ubyte", 3);
  auto labels = read_idx(dir, prefix + "-labels-idx1-ubyte", 1);
  if (images.size(0) != labels.size(0) || images.size(1) != 28 || images.size(2) != 28) {
    throw DatasetError(dir + ": " + prefix + " images " + std::to_string(images.size(0)) + "x" +
                       std::to_string(images.size(1)) + "x" + std::to_string(images.size(2)) +
                       " do not match " + std::to_string(labels.size(0)) + " labels of 28x28");
  }
  if (labels.max().item<int64_t>() >= kClasses) throw DatasetError(dir + ": a label is >= 10");
  return {((images.to(torch::kFloat) / 255.0f - kMean) / kStd).unsqueeze(1),
          labels.to(torch::kLong)};
}

// -- the model ------------------------------------------------------------------------------------

// 28x28 -> conv-bn-relu -> max pool -> conv-bn-relu (stride 2) -> residual block (conv-bn-relu,
// conv-bn, add, relu) -> global average pool -> linear: the network of
// examples/python/qat_fashion_mnist.py, as a Sequential export_int8 walks.
//
//   0  ActQuant                                  "input"  [1, 28, 28]
//   1  ConvBn2d 1->16 3x3 pad 1 ReLU                      [16, 28, 28]
//   2  ActQuant
//   3  MaxPool2d 2                                        [16, 14, 14]
//   4  ConvBn2d 16->32 3x3 stride 2 pad 1 ReLU            [32, 7, 7]
//   5  ActQuant
//   6  Residual: body = ConvBn2d 32->32 ReLU, ActQuant, ConvBn2d 32->32, ActQuant;
//      identity shortcut; ReLU in the add
//   7  AdaptiveAvgPool2d 1                                [32, 1, 1]
//   8  SharedActQuant(6.add.out_quant)
//   9  Flatten                                            [32]
//  10  QuantLinear 32->10
//  11  ActQuant                                           logits
torch::nn::Sequential make_model(int64_t width = 32) {
  qnn::ActQuant input_quant;
  qnn::ConvBn2d stem(qnn::ConvBn2dOptions(1, width / 2, 3).padding(1).activation("relu"));
  qnn::ActQuant stem_quant;
  qnn::ConvBn2d down(
      qnn::ConvBn2dOptions(width / 2, width, 3).stride(2).padding(1).activation("relu"));
  qnn::ActQuant down_quant;
  qnn::ConvBn2d res1(qnn::ConvBn2dOptions(width, width, 3).padding(1).activation("relu"));
  qnn::ActQuant res1_quant;
  qnn::ConvBn2d res2(qnn::ConvBn2dOptions(width, width, 3).padding(1));
  qnn::ActQuant res2_quant;
  qnn::Residual block(torch::nn::Sequential(res1, res1_quant, res2, res2_quant), nullptr,
                      qnn::ResidualOptions().activation("relu"));
  qnn::SharedActQuant pool_quant(block->add->out_quant);
  qnn::QuantLinear fc(width, kClasses);
  qnn::ActQuant logits_quant;
  // Each layer linked to the quantizer of its input (the int8 model's int32 bias is simulated);
  // the max pool keeps the stem's grid, the average pool the add's.
  stem->set_input_quantizer(input_quant);
  down->set_input_quantizer(stem_quant);
  res1->set_input_quantizer(down_quant);
  res2->set_input_quantizer(res1_quant);
  fc->set_input_quantizer(pool_quant);
  return torch::nn::Sequential(input_quant, stem, stem_quant, torch::nn::MaxPool2d(2), down,
                               down_quant, block, torch::nn::AdaptiveAvgPool2d(1), pool_quant,
                               torch::nn::Flatten(), fc, logits_quant);
}

// Every FakeQuantizer (weights, activations, the add's output) to `mode`.
void set_quantizers(torch::nn::Module& model, qnn::Mode mode) {
  for (const auto& m : model.modules(/*include_self=*/false)) {
    if (auto* q = dynamic_cast<qnn::FakeQuantizerImpl*>(m.get())) q->set_mode(mode);
  }
}

// -- training and evaluation ----------------------------------------------------------------------

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Adam on random batches of the training set, cosine learning-rate decay to 0; the scheduler
// (if any) is called first in each step. Returns the last loss.
double train(torch::nn::Sequential& model, const Split& data, int64_t steps, double lr,
             const Options& o, const std::string& phase,
             qnn::QATSchedulerImpl* scheduler = nullptr) {
  torch::optim::Adam opt(model->parameters(), torch::optim::AdamOptions(lr));
  model->train();
  const int64_t n = data.images.size(0);
  double loss_sum = 0.0, last = 0.0;
  int64_t loss_count = 0;
  const auto start = std::chrono::steady_clock::now();
  for (int64_t step = 0; step < steps; ++step) {
    const double step_lr = 0.5 * lr * (1.0 + std::cos(M_PI * step / steps));
    for (auto& group : opt.param_groups()) {
      static_cast<torch::optim::AdamOptions&>(group.options()).lr(step_lr);
    }
    if (scheduler) scheduler->forward();  // starts the phases due at this step (freeze_bn, ...)
    const auto idx = torch::randint(n, {o.batch}, torch::kLong);
    opt.zero_grad();
    auto loss = torch::nn::functional::cross_entropy(
        model->forward(data.images.index_select(0, idx)), data.labels.index_select(0, idx));
    loss.backward();
    opt.step();
    last = loss.item<double>();
    loss_sum += last;
    ++loss_count;
    if ((step + 1) % o.log_every == 0 || step + 1 == steps) {
      std::printf("%s: step %5lld/%lld  epoch %.2f  loss %.4f (mean of the last %lld)  %.1f s\n",
                  phase.c_str(), static_cast<long long>(step + 1), static_cast<long long>(steps),
                  static_cast<double>((step + 1) * o.batch) / n, loss_sum / loss_count,
                  static_cast<long long>(loss_count), seconds_since(start));
      std::fflush(stdout);
      loss_sum = 0.0;
      loss_count = 0;
    }
  }
  return last;
}

torch::Tensor predict(torch::nn::Sequential& model, const torch::Tensor& images) {
  torch::NoGradGuard no_grad;
  model->eval();
  std::vector<torch::Tensor> out;
  for (int64_t i = 0; i < images.size(0); i += kEvalBatch) {
    out.push_back(model->forward(images.slice(0, i, i + kEvalBatch)).argmax(1));
  }
  return torch::cat(out);
}

torch::Tensor predict_int8(edgeqat::runtime::Model& model, const torch::Tensor& images) {
  const auto x = images.contiguous();
  std::vector<int64_t> classes;
  classes.reserve(x.size(0));
  for (int64_t i = 0; i < x.size(0); i += kEvalBatch) {
    const int64_t batch = std::min(kEvalBatch, x.size(0) - i);
    const auto logits = model.run_float({x[i].data_ptr<float>()}, batch).at(0);
    for (int64_t b = 0; b < batch; ++b) {
      const auto first = logits.begin() + b * kClasses;
      classes.push_back(std::max_element(first, first + kClasses) - first);
    }
  }
  return torch::tensor(classes, torch::kLong);
}

double percent_equal(const torch::Tensor& a, const torch::Tensor& b) {
  return 100.0 * a.eq(b).to(torch::kDouble).mean().item<double>();
}

int run(const Options& o) {
  torch::set_num_threads(static_cast<int>(o.threads));
  torch::manual_seed(o.seed);
  fs::create_directories(o.out);
  const auto total_start = std::chrono::steady_clock::now();

  const Split train_data = load_split(o.data, "train");
  const Split test_data = load_split(o.data, "t10k");
  std::printf("Fashion-MNIST from %s: %lld training, %lld test images\n", o.data.c_str(),
              static_cast<long long>(train_data.images.size(0)),
              static_cast<long long>(test_data.images.size(0)));

  // 1. float: every quantizer off, the modules are plain conv / BN / ReLU / linear.
  auto model = make_model();
  set_quantizers(*model, qnn::Mode::Off);
  auto start = std::chrono::steady_clock::now();
  train(model, train_data, o.float_steps, kFloatLr, o, "float");
  const double float_seconds = seconds_since(start);
  const double float_acc = percent_equal(predict(model, test_data.images), test_data.labels);
  torch::save(model, (fs::path(o.out) / "float.pt").string());
  std::printf("float: %lld steps in %.1f s, test accuracy %.2f%%\n",
              static_cast<long long>(o.float_steps), float_seconds, float_acc);

  // 2. QAT from the float weights: quantizers on, initial ranges from a few training batches
  // (the observers keep following the data until the schedule freezes them).
  set_quantizers(*model, qnn::Mode::Observe);
  model->train();
  {
    torch::NoGradGuard no_grad;
    for (int64_t b = 0; b < o.calibration_batches; ++b) {
      const int64_t first = (b * kCalibrationBatch) % train_data.images.size(0);
      model->forward(train_data.images.slice(0, first, first + kCalibrationBatch));
    }
  }
  std::printf("QAT: ranges calibrated on %lld batches of %lld training images\n",
              static_cast<long long>(o.calibration_batches),
              static_cast<long long>(kCalibrationBatch));
  const auto schedule =
      qnn::QATSchedule().freeze_bn_step(o.qat_steps / 2).freeze_observers_step(o.qat_steps * 3 / 4);
  auto scheduler = qnn::attach_schedule(model, schedule);
  std::printf("QAT: %lld steps, freeze_bn at step %lld, freeze_observers at step %lld\n",
              static_cast<long long>(o.qat_steps), static_cast<long long>(o.qat_steps / 2),
              static_cast<long long>(o.qat_steps * 3 / 4));
  start = std::chrono::steady_clock::now();
  train(model, train_data, o.qat_steps, kQatLr, o, "QAT", scheduler.get());
  const double qat_seconds = seconds_since(start);
  const auto simulated = predict(model, test_data.images);  // eval mode: the int8 graph in float
  const double sim_acc = percent_equal(simulated, test_data.labels);
  torch::save(model, (fs::path(o.out) / "qat.pt").string());
  std::printf("QAT: %lld steps in %.1f s, simulation test accuracy %.2f%%\n",
              static_cast<long long>(o.qat_steps), qat_seconds, sim_acc);

  // 3. int8: export, then the torch-free runtime.
  const auto path = (fs::path(o.out) / "qat.eq8").string();
  edgeqat::export_int8(model, torch::zeros({1, 1, 28, 28}), path);
  edgeqat::runtime::ModelOptions options;
  options.num_threads = static_cast<int>(o.threads);
  auto int8 = edgeqat::runtime::Model::load(path, options);
  start = std::chrono::steady_clock::now();
  const auto runtime = predict_int8(int8, test_data.images);
  const double int8_seconds = seconds_since(start);
  const double int8_acc = percent_equal(runtime, test_data.labels);
  const double agreement = percent_equal(runtime, simulated);
  std::printf(
      "int8: exported to %s (%.1f KiB), runtime test accuracy %.2f%%, top-1 agreement "
      "with the simulation %.2f%%\n",
      path.c_str(), static_cast<double>(fs::file_size(path)) / 1024.0, int8_acc, agreement);

  const auto test_count = static_cast<long long>(test_data.images.size(0));
  std::printf("\n| model | test accuracy (%lld images) | vs float |\n|---|---|---|\n", test_count);
  std::printf("| float | %.2f%% | |\n", float_acc);
  std::printf("| QAT simulation (fake quant) | %.2f%% | %+.2f |\n", sim_acc, sim_acc - float_acc);
  std::printf("| QAT int8 (runtime) | %.2f%% | %+.2f |\n", int8_acc, int8_acc - float_acc);
  std::printf("\nint8 runtime vs QAT simulation: top-1 agreement %.2f%%\n", agreement);
  std::printf("int8 runtime: %.0f images/s on the test set (%lld threads, kernels '%s')\n",
              static_cast<double>(test_count) / int8_seconds, static_cast<long long>(o.threads),
              int8.kernels().c_str());
  std::printf("total wall time %.1f s; files in %s\n", seconds_since(total_start), o.out.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(parse_options(argc, argv));
  } catch (const std::invalid_argument& e) {
    std::cerr << "train_qat: " << e.what() << "\n";
    return 2;
  } catch (const DatasetError& e) {
    std::cerr << "train_qat: " << e.what() << "\n";
    return 1;
  } catch (const c10::Error& e) {
    std::cerr << "train_qat: " << e.what_without_backtrace() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "train_qat: " << e.what() << "\n";
    return 1;
  }
}
