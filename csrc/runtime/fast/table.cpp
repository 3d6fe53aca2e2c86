// ISA detection and selection, and the fast kernel tables (fast.h).
#include <cstdlib>
#include <string>
#include <vector>

#include "../error.h"
#include "driver.h"
#include "edgeqat/runtime/fast.h"

namespace edgeqat::runtime::fast::detail {

// elementwise.cpp (the same code for every ISA).
void max_pool2d_isa(Isa isa, KernelContext* ctx, const PoolParams& p, const Shape4& in,
                    const int8_t* input, const Shape4& out, int8_t* output);
void average_pool2d_impl(KernelContext* ctx, const PoolParams& p, const Shape4& in,
                         const int8_t* input, const Shape4& out, int8_t* output);
void quantize_isa(Isa isa, KernelContext* ctx, const QuantizeParams& p, size_t count,
                  const float* input, int8_t* output);
void dequantize_impl(KernelContext* ctx, const QuantizeParams& p, size_t count, const int8_t* input,
                     float* output);

namespace {

constexpr const char* kNames[kNumIsas] = {"portable", "avx2", "avx512_vnni"};

bool cpu_supports(Isa isa) {
  switch (isa) {
    case Isa::kPortable:
      return true;
#if defined(EDGEQAT_RUNTIME_X86)
    case Isa::kAvx2:
      __builtin_cpu_init();
      return __builtin_cpu_supports("avx2");
    case Isa::kAvx512Vnni:
      // __builtin_cpu_supports also checks that the OS saves the AVX-512 state (XCR0).
      __builtin_cpu_init();
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
#endif
    default:
      return false;
  }
}

Isa best_supported() {
  static const Isa best = [] {
    Isa b = Isa::kPortable;
    for (int i = 0; i < kNumIsas; ++i) {
      if (cpu_supports(static_cast<Isa>(i))) b = static_cast<Isa>(i);
    }
    return b;
  }();
  return best;
}

int find_name(const std::string& name) {
  for (int i = 0; i < kNumIsas; ++i) {
    if (name == kNames[i]) return i;
  }
  return -1;
}

std::string available_list() {
  std::string s;
  for (int i = 0; i <= static_cast<int>(best_supported()); ++i) {
    if (!isa_supported(static_cast<Isa>(i))) continue;
    if (!s.empty()) s += ", ";
    s += kNames[i];
  }
  return s;
}

Isa active() {
  const Isa best = best_supported();
  const char* env = std::getenv("EDGEQAT_RUNTIME_ISA");
  if (env == nullptr || *env == '\0') return best;
  const int cap = find_name(env);
  if (cap < 0) {
    runtime::detail::fail("fast::kernels", "EDGEQAT_RUNTIME_ISA must be one of portable, avx2, ",
                          "avx512_vnni, got '", env, "'");
  }
  // A cap: the best supported ISA not above it.
  for (int i = cap; i > 0; --i) {
    if (i <= static_cast<int>(best) && isa_supported(static_cast<Isa>(i))) {
      return static_cast<Isa>(i);
    }
  }
  return Isa::kPortable;
}

// The table functions of one ISA.
template <Isa I>
void conv2d_t(KernelContext* ctx, const ConvParams& params, const QuantizedMultiplier* multipliers,
              const Shape4& input_shape, const int8_t* input, const Shape4& filter_shape,
              const int8_t* filter, const int32_t* bias, const Shape4& output_shape,
              int8_t* output) {
  conv2d_isa(I, ctx, params, multipliers, input_shape, input, filter_shape, filter, bias,
             output_shape, output);
}
template <Isa I>
void depthwise_conv2d_t(KernelContext* ctx, const DepthwiseConvParams& params,
                        const QuantizedMultiplier* multipliers, const Shape4& input_shape,
                        const int8_t* input, const Shape4& filter_shape, const int8_t* filter,
                        const int32_t* bias, const Shape4& output_shape, int8_t* output) {
  depthwise_conv2d_isa(I, ctx, params, multipliers, input_shape, input, filter_shape, filter, bias,
                       output_shape, output);
}
template <Isa I>
void fully_connected_t(KernelContext* ctx, const FullyConnectedParams& params,
                       const QuantizedMultiplier* multipliers, const FullyConnectedShape& shape,
                       const int8_t* input, const int8_t* filter, const int32_t* bias,
                       int8_t* output) {
  fully_connected_isa(I, ctx, params, multipliers, shape, input, filter, bias, output);
}

template <Isa I>
void add_t(KernelContext* ctx, const AddParams& params, size_t count, const int8_t* input1,
           const int8_t* input2, int8_t* output) {
  add_isa(I, ctx, params, count, input1, input2, output);
}

template <Isa I>
void max_pool2d_t(KernelContext* ctx, const PoolParams& params, const Shape4& input_shape,
                  const int8_t* input, const Shape4& output_shape, int8_t* output) {
  max_pool2d_isa(I, ctx, params, input_shape, input, output_shape, output);
}
template <Isa I>
void quantize_t(KernelContext* ctx, const QuantizeParams& params, size_t count, const float* input,
                int8_t* output) {
  quantize_isa(I, ctx, params, count, input, output);
}

template <Isa I>
constexpr KernelTable make_table(const char* name) {
  return KernelTable{name,
                     &conv2d_t<I>,
                     &depthwise_conv2d_t<I>,
                     &fully_connected_t<I>,
                     &add_t<I>,
                     &average_pool2d_impl,
                     &max_pool2d_t<I>,
                     &quantize_t<I>,
                     &dequantize_impl};
}

const KernelTable kIsaTables[kNumIsas] = {make_table<Isa::kPortable>("fast/portable"),
                                          make_table<Isa::kAvx2>("fast/avx2"),
                                          make_table<Isa::kAvx512Vnni>("fast/avx512_vnni")};
const KernelTable kFastTables[kNumIsas] = {make_table<Isa::kPortable>("fast"),
                                           make_table<Isa::kAvx2>("fast"),
                                           make_table<Isa::kAvx512Vnni>("fast")};

}  // namespace

bool isa_supported(Isa isa) {
#if !defined(EDGEQAT_RUNTIME_X86)
  if (isa != Isa::kPortable) return false;
#endif
  return cpu_supports(isa);
}

const IsaKernels& isa_kernels(Isa isa) {
  switch (isa) {
#if defined(EDGEQAT_RUNTIME_X86)
    case Isa::kAvx2:
      return kAvx2Kernels;
    case Isa::kAvx512Vnni:
      return kAvx512VnniKernels;
#endif
    default:
      return kPortableKernels;
  }
}

const char* isa_name(Isa isa) { return kNames[static_cast<int>(isa)]; }

Isa isa_from_name(const std::string& name, const char* fn) {
  if (name.empty()) return active();
  const int i = find_name(name);
  if (i < 0) {
    runtime::detail::fail(
        fn, "unknown isa '", name,
        "' (known: portable, avx2, avx512_vnni; available here: ", available_list(), ")");
  }
  if (!isa_supported(static_cast<Isa>(i))) {
    runtime::detail::fail(fn, "isa '", name,
                          "' is not supported by this CPU or build (available: ", available_list(),
                          ")");
  }
  return static_cast<Isa>(i);
}

}  // namespace edgeqat::runtime::fast::detail

namespace edgeqat::runtime::fast {

std::vector<std::string> available_isas() {
  std::vector<std::string> names;
  for (int i = 0; i < detail::kNumIsas; ++i) {
    if (detail::isa_supported(static_cast<detail::Isa>(i))) {
      names.emplace_back(detail::isa_name(static_cast<detail::Isa>(i)));
    }
  }
  return names;
}

std::string active_isa() { return detail::isa_name(detail::active()); }

const KernelTable& kernels() { return detail::kFastTables[static_cast<int>(detail::active())]; }

const KernelTable& kernels_for_isa(const std::string& isa) {
  if (isa.empty()) {
    runtime::detail::fail("fast::kernels_for_isa", "isa must not be empty (",
                          "available: ", detail::available_list(), ")");
  }
  return detail::kIsaTables[static_cast<int>(detail::isa_from_name(isa, "fast::kernels_for_isa"))];
}

void conv2d(KernelContext* ctx, const ConvParams& params, const QuantizedMultiplier* multipliers,
            const Shape4& input_shape, const int8_t* input, const Shape4& filter_shape,
            const int8_t* filter, const int32_t* bias, const Shape4& output_shape, int8_t* output) {
  kernels().conv2d(ctx, params, multipliers, input_shape, input, filter_shape, filter, bias,
                   output_shape, output);
}
void depthwise_conv2d(KernelContext* ctx, const DepthwiseConvParams& params,
                      const QuantizedMultiplier* multipliers, const Shape4& input_shape,
                      const int8_t* input, const Shape4& filter_shape, const int8_t* filter,
                      const int32_t* bias, const Shape4& output_shape, int8_t* output) {
  kernels().depthwise_conv2d(ctx, params, multipliers, input_shape, input, filter_shape, filter,
                             bias, output_shape, output);
}
void fully_connected(KernelContext* ctx, const FullyConnectedParams& params,
                     const QuantizedMultiplier* multipliers, const FullyConnectedShape& shape,
                     const int8_t* input, const int8_t* filter, const int32_t* bias,
                     int8_t* output) {
  kernels().fully_connected(ctx, params, multipliers, shape, input, filter, bias, output);
}
void add(KernelContext* ctx, const AddParams& params, size_t count, const int8_t* input1,
         const int8_t* input2, int8_t* output) {
  kernels().add(ctx, params, count, input1, input2, output);
}
void average_pool2d(KernelContext* ctx, const PoolParams& params, const Shape4& input_shape,
                    const int8_t* input, const Shape4& output_shape, int8_t* output) {
  detail::average_pool2d_impl(ctx, params, input_shape, input, output_shape, output);
}
void max_pool2d(KernelContext* ctx, const PoolParams& params, const Shape4& input_shape,
                const int8_t* input, const Shape4& output_shape, int8_t* output) {
  kernels().max_pool2d(ctx, params, input_shape, input, output_shape, output);
}
void quantize(KernelContext* ctx, const QuantizeParams& params, size_t count, const float* input,
              int8_t* output) {
  kernels().quantize(ctx, params, count, input, output);
}
void dequantize(KernelContext* ctx, const QuantizeParams& params, size_t count, const int8_t* input,
                float* output) {
  detail::dequantize_impl(ctx, params, count, input, output);
}

}  // namespace edgeqat::runtime::fast
