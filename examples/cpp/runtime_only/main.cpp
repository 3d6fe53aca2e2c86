// Runs an exported int8 model (edgeqat.export / edgeqat::export_int8) on float input with the
// torch-free runtime, and prints the model's input and output and the outputs of one batch.
//
//   run_int8 model.eq8 [inputs.f32 batch] [num_threads]
//
// inputs.f32: batch * numel(input) float32 values, NCHW, native byte order; without it the
// input is a ramp over [-1, 1]. Prints "input <name> [shape]", "output <name> [shape]" and one line
// of values per sample.
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <stdexcept>
#include <string>
#include <vector>

#include "edgeqat/runtime/model.h"

namespace rt = edgeqat::runtime;

namespace {

std::vector<float> read_floats(const std::string& path, size_t count) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot open " + path);
  std::vector<float> v(count);
  f.read(reinterpret_cast<char*>(v.data()), static_cast<std::streamsize>(count * sizeof(float)));
  if (static_cast<size_t>(f.gcount()) != count * sizeof(float)) {
    throw std::runtime_error(path + ": expected " + std::to_string(count) + " float32 values");
  }
  return v;
}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << "usage: run_int8 model.eq8 [inputs.f32 batch] [num_threads]\n";
    return 2;
  }
  try {
    rt::ModelOptions options;
    if (argc > 4) options.num_threads = std::atoi(argv[4]);
    rt::Model model = rt::Model::load(argv[1], options);
    const rt::ValueInfo& in = model.inputs().at(0);
    int64_t batch = argc > 3 ? std::atoll(argv[3]) : 1;
    if (batch < 1) throw std::runtime_error("batch must be >= 1");
    const auto count = static_cast<size_t>(batch * in.numel());
    std::vector<float> x;
    if (argc > 2) {
      x = read_floats(argv[2], count);
    } else {
      for (size_t i = 0; i < count; ++i)
        x.push_back(-1.0f + 2.0f * i / (count > 1 ? count - 1 : 1));
    }
    const auto y = model.run_float({x.data()}, batch);
    const rt::ValueInfo& out = model.outputs().at(0);
    std::cout << std::setprecision(9);  // float32 values printed exactly
    std::cout << "input " << in.name << " " << shape_str(in.shape) << "\n";
    std::cout << "output " << out.name << " " << shape_str(out.shape) << "\n";
    for (int64_t b = 0; b < batch; ++b) {
      for (int64_t i = 0; i < out.numel(); ++i) {
        std::cout << (i ? " " : "") << y[0][static_cast<size_t>(b * out.numel() + i)];
      }
      std::cout << "\n";
    }
  } catch (const std::exception& e) {
    std::cerr << "run_int8: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
