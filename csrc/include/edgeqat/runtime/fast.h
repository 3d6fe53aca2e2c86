// Fast int8 kernels: the same signatures and the same results, bit for bit, as the reference
// kernels (reference.h), computed with an int8 GEMM, SIMD and threads.
//
//  - conv2d: im2col (none for 1x1 stride-1 unpadded convs, which are a GEMM over NHWC already:
//    the input rows are only converted to the GEMM's operand format) and an int8 GEMM with
//    int32 accumulation, then the reference's requantization of each output; groups > 1 as one
//    GEMM per group.
//  - depthwise_conv2d: a direct kernel per output row, vectorized over the (contiguous NHWC)
//    channels; a depth multiplier > 1 repeats the input channels first.
//  - fully_connected: the conv's GEMM; through the table with a batch of at most 4, a GEMV
//    straight from the unpacked weights (packing them would cost more than the product).
//  - add, max pooling, quantize: vectorized per ISA; average pooling, dequantize: plain loops.
// Every kernel validates its arguments with the functions of checks.h, in the reference's order,
// so a bad argument throws the same std::invalid_argument with the same message.
//
// Why the results are exact: every product w * (q - zp) is at most 128 * 255 in magnitude and
// kernels reject reductions deeper than kMaxAccumulationDepth (types.h), so any int32
// accumulation order gives the reference's sum (the VNNI GEMM sums (q + 128) * w modulo 2^32
// and subtracts (128 + zp) * sum(w), exact because the true sum fits in int32); the output
// stage computes requantize_output (requantize.h) in 64-bit lanes.
//
// Instruction sets ("ISAs"), chosen at run time with __builtin_cpu_supports:
//   "portable"     standard C++ (the compiler's baseline flags)
//   "avx2"         AVX2: int16 GEMM with vpmaddwd (x86-64 only)
//   "avx512_vnni"  AVX-512 F/BW/VL + VNNI: int8 GEMM and depthwise with vpdpbusd (x86-64 only)
// kernels() uses the best one this CPU supports, capped by the environment variable
// EDGEQAT_RUNTIME_ISA (one of the names above) when it is set. All ISAs compute the same bits.
//
// Threads and scratch memory come from the KernelContext (kernels.h): a call splits its work
// over ctx->num_threads threads (the caller and the context's pool) and reuses the context's
// scratch buffers; with ctx == nullptr it runs single-threaded on scratch of its own. The work
// is split over output rows / pixels / channels only (never over a reduction), so results do
// not depend on the thread count.
//
// Prepacked weights: an interpreter runs the same conv / fully connected node many times with
// the same weights. pack_conv2d / pack_fully_connected / pack_depthwise_conv2d rearrange the
// weights once (for the kernels of one ISA, with per-channel weight sums); the *_packed
// functions then skip that step. The table functions pack into scratch memory on every call.
//
//   auto packed = fast::pack_conv2d(conv.params, filter_shape, filter);   // load time
//   fast::conv2d_packed(&ctx, conv.params, conv.multipliers.data(), packed, input_shape, x,
//                       bias, output_shape, y);                           // every inference
#pragma once

#include <cstddef>
#include <cstdint>
#include <new>
#include <string>
#include <vector>

#include "edgeqat/runtime/kernels.h"
#include "edgeqat/runtime/requantize.h"
#include "edgeqat/runtime/types.h"

namespace edgeqat::runtime::fast {

// ---- instruction sets ------------------------------------------------------------------------

// The ISAs this build and this CPU support, slowest first ("portable" always).
std::vector<std::string> available_isas();

// The ISA kernels() uses now: the best available one, capped by EDGEQAT_RUNTIME_ISA.
// Throws std::invalid_argument if EDGEQAT_RUNTIME_ISA is set to an unknown name.
std::string active_isa();

// The fast kernels (table name "fast") on active_isa(). Reads EDGEQAT_RUNTIME_ISA on each call.
const KernelTable& kernels();

// The fast kernels on one ISA (table names "fast/portable", "fast/avx2", "fast/avx512_vnni"),
// e.g. to test every ISA on one machine. Throws std::invalid_argument naming the ISA if it is
// unknown or not supported by this build / CPU.
const KernelTable& kernels_for_isa(const std::string& isa);

// ---- the kernels (kernels.h signatures, on active_isa()) -------------------------------------

void conv2d(KernelContext* ctx, const ConvParams& params, const QuantizedMultiplier* multipliers,
            const Shape4& input_shape, const int8_t* input, const Shape4& filter_shape,
            const int8_t* filter, const int32_t* bias, const Shape4& output_shape, int8_t* output);
void depthwise_conv2d(KernelContext* ctx, const DepthwiseConvParams& params,
                      const QuantizedMultiplier* multipliers, const Shape4& input_shape,
                      const int8_t* input, const Shape4& filter_shape, const int8_t* filter,
                      const int32_t* bias, const Shape4& output_shape, int8_t* output);
void fully_connected(KernelContext* ctx, const FullyConnectedParams& params,
                     const QuantizedMultiplier* multipliers, const FullyConnectedShape& shape,
                     const int8_t* input, const int8_t* filter, const int32_t* bias,
                     int8_t* output);
void add(KernelContext* ctx, const AddParams& params, size_t count, const int8_t* input1,
         const int8_t* input2, int8_t* output);
void average_pool2d(KernelContext* ctx, const PoolParams& params, const Shape4& input_shape,
                    const int8_t* input, const Shape4& output_shape, int8_t* output);
void max_pool2d(KernelContext* ctx, const PoolParams& params, const Shape4& input_shape,
                const int8_t* input, const Shape4& output_shape, int8_t* output);
void quantize(KernelContext* ctx, const QuantizeParams& params, size_t count, const float* input,
              int8_t* output);
void dequantize(KernelContext* ctx, const QuantizeParams& params, size_t count, const int8_t* input,
                float* output);

// Compile-time proof that the fast kernels have the shared signatures.
inline constexpr Conv2dKernel kConv2d = &conv2d;
inline constexpr DepthwiseConv2dKernel kDepthwiseConv2d = &depthwise_conv2d;
inline constexpr FullyConnectedKernel kFullyConnected = &fully_connected;
inline constexpr AddKernel kAdd = &add;
inline constexpr Pool2dKernel kAveragePool2d = &average_pool2d;
inline constexpr Pool2dKernel kMaxPool2d = &max_pool2d;
inline constexpr QuantizeKernel kQuantize = &quantize;
inline constexpr DequantizeKernel kDequantize = &dequantize;

// ---- prepacked weights -----------------------------------------------------------------------

// std::allocator with 64-byte (cache line, one AVX-512 vector) alignment.
template <class T>
struct AlignedAllocator {
  using value_type = T;
  static constexpr std::align_val_t kAlignment{64};
  AlignedAllocator() noexcept = default;
  template <class U>
  AlignedAllocator(const AlignedAllocator<U>&) noexcept {}  // NOLINT: rebinding
  T* allocate(size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), kAlignment)); }
  void deallocate(T* p, size_t) noexcept { ::operator delete(p, kAlignment); }
  template <class U>
  bool operator==(const AlignedAllocator<U>&) const noexcept {
    return true;
  }
  template <class U>
  bool operator!=(const AlignedAllocator<U>&) const noexcept {
    return false;
  }
};

// GEMM weights packed for one ISA: per group, N = n_per_group output channels over a depth
// K = depth (kernel_h * kernel_w * in_channels_per_group, or in_features) padded to
// depth_padded; the byte layout is the ISA's (csrc/runtime/fast/isa.h). Read-only for users.
struct PackedGemmWeights {
  std::string isa;  // the ISA whose GEMM reads `data`
  int groups = 0, n_per_group = 0, depth = 0, depth_padded = 0;
  size_t group_stride = 0;  // bytes between groups in `data`
  std::vector<uint8_t, AlignedAllocator<uint8_t>> data;
  std::vector<int32_t> weight_sums;  // [groups * n_per_group]: sum_k w
};

struct PackedConv2d {
  Shape4 filter_shape;  // OHWI, as given to pack_conv2d
  int groups = 1;
  PackedGemmWeights gemm;
};

struct PackedFullyConnected {
  int in_features = 0, out_features = 0;
  PackedGemmWeights gemm;
};

struct PackedDepthwiseConv2d {
  std::string isa;
  Shape4 filter_shape;                                   // [1, kh, kw, channels * depth_multiplier]
  std::vector<uint8_t, AlignedAllocator<uint8_t>> data;  // the ISA's layout (fast/isa.h)
  std::vector<int32_t> weight_sums;                      // [channels]: sum over the taps of w
};

// Pack for `isa` (empty: active_isa()). Validates what they can see (filter shape, groups,
// accumulation depth, null filter) with the messages of checks.h; throws std::invalid_argument
// also for an unknown or unsupported ISA.
PackedConv2d pack_conv2d(const ConvParams& params, const Shape4& filter_shape, const int8_t* filter,
                         const std::string& isa = "");
PackedFullyConnected pack_fully_connected(const FullyConnectedShape& shape, const int8_t* filter,
                                          const std::string& isa = "");
PackedDepthwiseConv2d pack_depthwise_conv2d(const DepthwiseConvParams& params,
                                            const Shape4& filter_shape, const int8_t* filter,
                                            const std::string& isa = "");

// The kernels on prepacked weights, run on the ISA the weights were packed for. Same checks and
// results as the table functions given the filter that was packed; also throw
// std::invalid_argument if params.groups (conv) or the shape (fully connected) does not match
// the packed weights, or if packed is empty.
void conv2d_packed(KernelContext* ctx, const ConvParams& params,
                   const QuantizedMultiplier* multipliers, const PackedConv2d& packed,
                   const Shape4& input_shape, const int8_t* input, const int32_t* bias,
                   const Shape4& output_shape, int8_t* output);
void fully_connected_packed(KernelContext* ctx, const FullyConnectedParams& params,
                            const QuantizedMultiplier* multipliers,
                            const PackedFullyConnected& packed, const FullyConnectedShape& shape,
                            const int8_t* input, const int32_t* bias, int8_t* output);
void depthwise_conv2d_packed(KernelContext* ctx, const DepthwiseConvParams& params,
                             const QuantizedMultiplier* multipliers,
                             const PackedDepthwiseConv2d& packed, const Shape4& input_shape,
                             const int8_t* input, const int32_t* bias, const Shape4& output_shape,
                             int8_t* output);

}  // namespace edgeqat::runtime::fast
