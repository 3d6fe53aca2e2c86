// Timing harness of the fast int8 kernels (not a test): GOPS (2 ops per multiply-add) of the
// reference and of the fast kernels on each ISA, 1 and 2 threads, on layers of MobileNet v2 and
// ResNet-18, with prepacked weights and through the table (packing per call).
//   edgeqat_runtime_kernel_bench [seconds per measurement, default 0.3]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "edgeqat/runtime/fast.h"
#include "edgeqat/runtime/runtime.h"

namespace rt = edgeqat::runtime;
namespace fast = rt::fast;

namespace {

double g_seconds = 0.3;

// Fastest seconds per call of fn over repetitions filling about g_seconds (the minimum filters
// out calls slowed down by other processes on a shared machine).
double time_call(const std::function<void()>& fn) {
  using clock = std::chrono::steady_clock;
  fn();  // warm up (packing buffers, thread pool, caches)
  std::vector<double> times;
  const auto deadline = clock::now() + std::chrono::duration<double>(g_seconds);
  while (times.size() < 3 || (clock::now() < deadline && times.size() < 2000)) {
    const auto t0 = clock::now();
    fn();
    times.push_back(std::chrono::duration<double>(clock::now() - t0).count());
  }
  return *std::min_element(times.begin(), times.end());
}

std::vector<int8_t> random_bytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> d(-127, 127);
  std::vector<int8_t> v(n);
  for (auto& x : v) x = static_cast<int8_t>(d(rng));
  return v;
}

struct Row {
  std::string name;
  double macs;
  std::vector<std::string> cells;
};

void print_header(const std::vector<std::string>& cols) {
  std::printf("%-34s %9s", "kernel", "MMAC");
  for (const auto& c : cols) std::printf(" %13s", c.c_str());
  std::printf("\n");
}

void print_row(const Row& r) {
  std::printf("%-34s %9.1f", r.name.c_str(), r.macs / 1e6);
  for (const auto& c : r.cells) std::printf(" %13s", c.c_str());
  std::printf("\n");
  std::fflush(stdout);
}

std::string gops(double macs, double seconds) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.1f", 2.0 * macs / seconds / 1e9);
  return buf;
}

struct ConvBench {
  std::string name;
  rt::Shape4 in;
  int cout, k, stride, pad;
  bool run_reference;
};

struct DwBench {
  std::string name;
  rt::Shape4 in;
  int k, stride, pad;
};

struct FcBench {
  std::string name;
  int batch, in, out;
};

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1) g_seconds = std::atof(argv[1]);
  const std::vector<std::string> isas = fast::available_isas();
  const int thread_counts[] = {1, 2};
  std::vector<std::string> cols = {"reference"};
  for (const auto& isa : isas)
    for (int t : thread_counts) cols.push_back(isa.substr(0, 8) + "/" + std::to_string(t) + "t");
  std::printf(
      "GOPS (2 x multiply-adds / s) of the fastest call; fast columns: prepacked weights\n");
  print_header(cols);

  const ConvBench convs[] = {
      {"conv 1x56x56x64 -> 64 3x3", {1, 56, 56, 64}, 64, 3, 1, 1, true},
      {"conv 1x7x7x512 -> 512 3x3", {1, 7, 7, 512}, 512, 3, 1, 1, true},
      {"conv 1x28x28x32 -> 192 1x1", {1, 28, 28, 32}, 192, 1, 1, 0, true},
      {"conv 1x14x14x384 -> 64 1x1", {1, 14, 14, 384}, 64, 1, 1, 0, true},
      {"conv 1x224x224x3 -> 32 3x3 s2", {1, 224, 224, 3}, 32, 3, 2, 1, true},
      {"conv 1x224x224x3 -> 64 7x7 s2", {1, 224, 224, 3}, 64, 7, 2, 3, false},
      {"conv 32x56x56x64 -> 64 3x3", {32, 56, 56, 64}, 64, 3, 1, 1, false},
      {"conv 32x7x7x512 -> 512 3x3", {32, 7, 7, 512}, 512, 3, 1, 1, false},
  };
  for (const ConvBench& b : convs) {
    rt::ConvSetup setup =
        rt::make_conv_params(0.02, 3, std::vector<double>(b.cout, 0.001), 0.05, -2);
    setup.params.stride_h = setup.params.stride_w = b.stride;
    setup.params.padding = {b.pad, b.pad, b.pad, b.pad};
    const rt::Shape4 fs{b.cout, b.k, b.k, b.in.c};
    const int oh = (b.in.h + 2 * b.pad - b.k) / b.stride + 1;
    const int ow = (b.in.w + 2 * b.pad - b.k) / b.stride + 1;
    const rt::Shape4 out{b.in.n, oh, ow, b.cout};
    const auto x = random_bytes(static_cast<size_t>(rt::num_elements(b.in)), 1);
    const auto w = random_bytes(static_cast<size_t>(rt::num_elements(fs)), 2);
    const std::vector<int32_t> bias(b.cout, 100);
    std::vector<int8_t> y(static_cast<size_t>(rt::num_elements(out)));
    Row row{b.name, static_cast<double>(rt::num_elements(out)) * b.k * b.k * b.in.c, {}};
    row.cells.push_back(b.run_reference ? gops(row.macs, time_call([&] {
                                                 rt::reference::conv2d(nullptr, setup.params,
                                                                       setup.multipliers.data(),
                                                                       b.in, x.data(), fs, w.data(),
                                                                       bias.data(), out, y.data());
                                               }))
                                        : "-");
    for (const auto& isa : isas) {
      const fast::PackedConv2d packed = fast::pack_conv2d(setup.params, fs, w.data(), isa);
      for (int t : thread_counts) {
        rt::KernelContext ctx(t);
        row.cells.push_back(gops(row.macs, time_call([&] {
                                   fast::conv2d_packed(&ctx, setup.params, setup.multipliers.data(),
                                                       packed, b.in, x.data(), bias.data(), out,
                                                       y.data());
                                 })));
      }
    }
    print_row(row);
  }

  const DwBench dws[] = {
      {"depthwise 1x112x112x32 3x3", {1, 112, 112, 32}, 3, 1, 1},
      {"depthwise 1x112x112x96 3x3 s2", {1, 112, 112, 96}, 3, 2, 1},
      {"depthwise 1x14x14x576 3x3", {1, 14, 14, 576}, 3, 1, 1},
      {"depthwise 1x7x7x960 3x3", {1, 7, 7, 960}, 3, 1, 1},
  };
  for (const DwBench& b : dws) {
    rt::DepthwiseConvSetup setup =
        rt::make_depthwise_conv_params(0.02, 3, std::vector<double>(b.in.c, 0.001), 0.05, -2);
    setup.params.stride_h = setup.params.stride_w = b.stride;
    setup.params.padding = {b.pad, b.pad, b.pad, b.pad};
    const rt::Shape4 fs{1, b.k, b.k, b.in.c};
    const int oh = (b.in.h + 2 * b.pad - b.k) / b.stride + 1;
    const int ow = (b.in.w + 2 * b.pad - b.k) / b.stride + 1;
    const rt::Shape4 out{b.in.n, oh, ow, b.in.c};
    const auto x = random_bytes(static_cast<size_t>(rt::num_elements(b.in)), 3);
    const auto w = random_bytes(static_cast<size_t>(rt::num_elements(fs)), 4);
    std::vector<int8_t> y(static_cast<size_t>(rt::num_elements(out)));
    Row row{b.name, static_cast<double>(rt::num_elements(out)) * b.k * b.k, {}};
    row.cells.push_back(gops(row.macs, time_call([&] {
                               rt::reference::depthwise_conv2d(
                                   nullptr, setup.params, setup.multipliers.data(), b.in, x.data(),
                                   fs, w.data(), nullptr, out, y.data());
                             })));
    for (const auto& isa : isas) {
      const auto packed = fast::pack_depthwise_conv2d(setup.params, fs, w.data(), isa);
      for (int t : thread_counts) {
        rt::KernelContext ctx(t);
        row.cells.push_back(gops(row.macs, time_call([&] {
                                   fast::depthwise_conv2d_packed(
                                       &ctx, setup.params, setup.multipliers.data(), packed, b.in,
                                       x.data(), nullptr, out, y.data());
                                 })));
      }
    }
    print_row(row);
  }

  const FcBench fcs[] = {
      {"fc 1x1280 -> 1000", 1, 1280, 1000},
      {"fc 32x1280 -> 1000", 32, 1280, 1000},
      {"fc 1x512 -> 1000", 1, 512, 1000},
  };
  for (int table = 0; table < 2; ++table) {
    for (const FcBench& b : fcs) {
      const rt::FullyConnectedShape s{b.batch, b.in, b.out};
      rt::FullyConnectedSetup setup =
          rt::make_fully_connected_params(0.02, 3, std::vector<double>(b.out, 0.001), 0.05, -2);
      const auto x = random_bytes(static_cast<size_t>(b.batch) * b.in, 5);
      const auto w = random_bytes(static_cast<size_t>(b.in) * b.out, 6);
      std::vector<int8_t> y(static_cast<size_t>(b.batch) * b.out);
      Row row{b.name + (table ? " (table)" : ""), static_cast<double>(b.batch) * b.in * b.out, {}};
      row.cells.push_back(gops(row.macs, time_call([&] {
                                 rt::reference::fully_connected(
                                     nullptr, setup.params, setup.multipliers.data(), s, x.data(),
                                     w.data(), nullptr, y.data());
                               })));
      for (const auto& isa : isas) {
        const auto packed = fast::pack_fully_connected(s, w.data(), isa);
        const rt::KernelTable& kt = fast::kernels_for_isa(isa);
        for (int t : thread_counts) {
          rt::KernelContext ctx(t);
          row.cells.push_back(
              gops(row.macs, time_call([&] {
                     if (table) {
                       kt.fully_connected(&ctx, setup.params, setup.multipliers.data(), s, x.data(),
                                          w.data(), nullptr, y.data());
                     } else {
                       fast::fully_connected_packed(&ctx, setup.params, setup.multipliers.data(),
                                                    packed, s, x.data(), nullptr, y.data());
                     }
                   })));
        }
      }
      print_row(row);
    }
  }

  // The table path of the convs (weights packed on every call).
  for (const ConvBench& b : convs) {
    if (!b.run_reference) continue;
    rt::ConvSetup setup =
        rt::make_conv_params(0.02, 3, std::vector<double>(b.cout, 0.001), 0.05, -2);
    setup.params.stride_h = setup.params.stride_w = b.stride;
    setup.params.padding = {b.pad, b.pad, b.pad, b.pad};
    const rt::Shape4 fs{b.cout, b.k, b.k, b.in.c};
    const int oh = (b.in.h + 2 * b.pad - b.k) / b.stride + 1;
    const int ow = (b.in.w + 2 * b.pad - b.k) / b.stride + 1;
    const rt::Shape4 out{b.in.n, oh, ow, b.cout};
    const auto x = random_bytes(static_cast<size_t>(rt::num_elements(b.in)), 1);
    const auto w = random_bytes(static_cast<size_t>(rt::num_elements(fs)), 2);
    std::vector<int8_t> y(static_cast<size_t>(rt::num_elements(out)));
    Row row{b.name + " (table)",
            static_cast<double>(rt::num_elements(out)) * b.k * b.k * b.in.c,
            {"-"}};
    for (const auto& isa : isas) {
      const rt::KernelTable& kt = fast::kernels_for_isa(isa);
      for (int t : thread_counts) {
        rt::KernelContext ctx(t);
        row.cells.push_back(gops(row.macs, time_call([&] {
                                   kt.conv2d(&ctx, setup.params, setup.multipliers.data(), b.in,
                                             x.data(), fs, w.data(), nullptr, out, y.data());
                                 })));
      }
    }
    print_row(row);
  }

  // Whole networks at 224x224, batch 1: the sum over the conv / depthwise / fully connected
  // layers of MobileNet v2 and ResNet-18 (prepacked weights), in milliseconds.
  {
    struct Layer {
      int h, cin, cout, k, stride;
      bool depthwise, fc;
    };
    std::vector<Layer> mobilenet = {{224, 3, 32, 3, 2, false, false},
                                    {112, 32, 32, 3, 1, true, false},
                                    {112, 32, 16, 1, 1, false, false}};
    const int blocks[6][4] = {{6, 24, 2, 2}, {6, 32, 3, 2},  {6, 64, 4, 2},
                              {6, 96, 3, 1}, {6, 160, 3, 2}, {6, 320, 1, 1}};
    int h = 112, c = 16;
    for (const auto& b : blocks) {
      for (int i = 0; i < b[2]; ++i) {
        const int e = c * b[0], stride = i == 0 ? b[3] : 1;
        mobilenet.push_back({h, c, e, 1, 1, false, false});
        mobilenet.push_back({h, e, e, 3, stride, true, false});
        h = (h - 1) / stride + 1;
        mobilenet.push_back({h, e, b[1], 1, 1, false, false});
        c = b[1];
      }
    }
    mobilenet.push_back({7, 320, 1280, 1, 1, false, false});
    mobilenet.push_back({1, 1280, 1000, 1, 1, false, true});
    std::vector<Layer> resnet = {{224, 3, 64, 7, 2, false, false}};
    h = 56;
    c = 64;
    for (int stage = 0; stage < 4; ++stage) {
      const int co = 64 << stage;
      for (int blk = 0; blk < 2; ++blk) {
        const int stride = stage > 0 && blk == 0 ? 2 : 1;
        resnet.push_back({h, c, co, 3, stride, false, false});
        if (stride == 2) resnet.push_back({h, c, co, 1, 2, false, false});  // downsample
        h = (h - 1) / stride + 1;
        resnet.push_back({h, co, co, 3, 1, false, false});
        c = co;
      }
    }
    resnet.push_back({1, 512, 1000, 1, 1, false, true});
    auto total_ms = [&](const std::vector<Layer>& net, const std::string& isa, int threads) {
      rt::KernelContext ctx(threads);
      double total = 0;
      for (const Layer& l : net) {
        const int pad = l.k / 2, oh = (l.h + 2 * pad - l.k) / l.stride + 1;
        const rt::Shape4 in{1, l.h, l.h, l.cin}, out{1, oh, oh, l.cout};
        const auto x = random_bytes(static_cast<size_t>(rt::num_elements(in)), 9);
        std::vector<int8_t> y(static_cast<size_t>(rt::num_elements(out)));
        if (l.fc) {
          const rt::FullyConnectedShape s{1, l.cin, l.cout};
          auto setup = rt::make_fully_connected_params(0.02, 3, std::vector<double>(l.cout, 0.001),
                                                       0.05, -2);
          const auto w = random_bytes(static_cast<size_t>(l.cin) * l.cout, 10);
          const auto packed = fast::pack_fully_connected(s, w.data(), isa);
          total += time_call([&] {
            fast::fully_connected_packed(&ctx, setup.params, setup.multipliers.data(), packed, s,
                                         x.data(), nullptr, y.data());
          });
        } else if (l.depthwise) {
          auto setup =
              rt::make_depthwise_conv_params(0.02, 3, std::vector<double>(l.cin, 0.001), 0.05, -2);
          setup.params.stride_h = setup.params.stride_w = l.stride;
          setup.params.padding = {pad, pad, pad, pad};
          const rt::Shape4 fs{1, l.k, l.k, l.cin};
          const auto w = random_bytes(static_cast<size_t>(rt::num_elements(fs)), 10);
          const auto packed = fast::pack_depthwise_conv2d(setup.params, fs, w.data(), isa);
          total += time_call([&] {
            fast::depthwise_conv2d_packed(&ctx, setup.params, setup.multipliers.data(), packed, in,
                                          x.data(), nullptr, out, y.data());
          });
        } else {
          auto setup = rt::make_conv_params(0.02, 3, std::vector<double>(l.cout, 0.001), 0.05, -2);
          setup.params.stride_h = setup.params.stride_w = l.stride;
          setup.params.padding = {pad, pad, pad, pad};
          const rt::Shape4 fs{l.cout, l.k, l.k, l.cin};
          const auto w = random_bytes(static_cast<size_t>(rt::num_elements(fs)), 10);
          const auto packed = fast::pack_conv2d(setup.params, fs, w.data(), isa);
          total += time_call([&] {
            fast::conv2d_packed(&ctx, setup.params, setup.multipliers.data(), packed, in, x.data(),
                                nullptr, out, y.data());
          });
        }
      }
      return total * 1e3;
    };
    std::printf(
        "\nconv + depthwise + fc layers of a network, 224x224 batch 1, ms (sum of the "
        "fastest calls):\n%-34s",
        "network");
    for (const auto& isa : isas)
      for (int t : thread_counts)
        std::printf(" %13s", (isa.substr(0, 8) + "/" + std::to_string(t) + "t").c_str());
    std::printf("\n");
    for (int net = 0; net < 2; ++net) {
      const std::vector<Layer>& layers = net == 0 ? mobilenet : resnet;
      std::printf("%-34s", ((net == 0 ? "MobileNet v2 (" : "ResNet-18 (") +
                            std::to_string(layers.size()) + " layers)")
                               .c_str());
      for (const auto& isa : isas) {
        for (int t : thread_counts) {
          std::printf(" %13.2f", total_ms(layers, isa, t));
          std::fflush(stdout);
        }
      }
      std::printf("\n");
    }
  }

  // Add: elements per second (G/s) instead of GOPS.
  {
    const size_t n = 56 * 56 * 24;
    const auto a = random_bytes(n, 7), b = random_bytes(n, 8);
    std::vector<int8_t> y(n);
    const rt::AddParams p = rt::make_add_params(0.02, 1, 0.03, -2, 0.04, 3);
    std::printf("add 56x56x24, G elements/s: reference %.2f",
                n / time_call([&] {
                  rt::reference::add(nullptr, p, n, a.data(), b.data(), y.data());
                }) / 1e9);
    for (const auto& isa : isas) {
      for (int t : thread_counts) {
        rt::KernelContext ctx(t);
        const rt::KernelTable& kt = fast::kernels_for_isa(isa);
        std::printf(", %s/%dt %.2f", isa.c_str(), t,
                    n / time_call([&] { kt.add(&ctx, p, n, a.data(), b.data(), y.data()); }) / 1e9);
      }
    }
    std::printf("\n");
  }
  return 0;
}
