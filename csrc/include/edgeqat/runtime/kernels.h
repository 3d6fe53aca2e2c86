// The signatures every implementation of an int8 kernel shares.
//
// The reference kernels (reference.h, namespace edgeqat::runtime::reference) are the slow,
// obvious definition of the arithmetic. Fast kernels (im2col + int8 GEMM, direct depthwise,
// SIMD, threads) will live beside them in their own namespace with exactly these signatures and
// must agree with them bit for bit, so an interpreter can hold a table of function pointers and
// tests can run both on the same arguments.
//
// Argument order: context, params, per-channel multipliers (where the kernel has them), then
// (shape, pointer) pairs for the inputs, then the output. Outputs never alias inputs.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "edgeqat/runtime/requantize.h"
#include "edgeqat/runtime/types.h"

namespace edgeqat::runtime {

namespace detail {
class KernelResources;  // the fast kernels' thread pool and scratch memory (fast/context.h)
}  // namespace detail

// Per-call execution resources for the fast kernels (fast.h): how many threads a call may use
// and, created on first use and reused by every later call, a thread pool of num_threads - 1
// workers (the calling thread is the other one) and scratch memory. Keep one context per
// interpreter and pass it to every call; one context serves one caller at a time (two calls
// must not run concurrently on the same context). It can be moved, not copied.
//
// May be null: fast kernels then run single-threaded with scratch of their own (allocated per
// call). The reference kernels ignore it. Results never depend on num_threads.
// KernelContext::min_parallel_work's default: ~2^18 MACs take ~5 us on one core, about what
// a pool hand-off and join cost (see csrc/runtime/fast/context.h).
inline constexpr int64_t kDefaultMinParallelWork = int64_t{1} << 18;

struct KernelContext {
  KernelContext() noexcept;
  KernelContext(int threads) noexcept;  // NOLINT(google-explicit-constructor): KernelContext{4}
  KernelContext(KernelContext&&) noexcept;
  KernelContext& operator=(KernelContext&&) noexcept;
  ~KernelContext();

  int num_threads = 1;  // values below 1 act as 1
  // A fast kernel call with less work than this (multiply-accumulates, or taps x outputs) runs
  // on the calling thread alone: handing it to the pool costs more than it saves. 0 splits
  // every call over num_threads (the tests use it, to exercise the threaded paths on small
  // shapes). Results never depend on it.
  int64_t min_parallel_work = kDefaultMinParallelWork;

  // Internal to the fast kernels; null until a fast kernel first runs with this context.
  std::unique_ptr<detail::KernelResources> resources;
};

using Conv2dKernel = void (*)(KernelContext* ctx, const ConvParams& params,
                              const QuantizedMultiplier* multipliers,  // [output_shape.c]
                              const Shape4& input_shape, const int8_t* input,
                              const Shape4& filter_shape, const int8_t* filter,
                              const int32_t* bias,  // [output_shape.c] or null
                              const Shape4& output_shape, int8_t* output);

using DepthwiseConv2dKernel = void (*)(KernelContext* ctx, const DepthwiseConvParams& params,
                                       const QuantizedMultiplier* multipliers,
                                       const Shape4& input_shape, const int8_t* input,
                                       const Shape4& filter_shape, const int8_t* filter,
                                       const int32_t* bias, const Shape4& output_shape,
                                       int8_t* output);

using FullyConnectedKernel = void (*)(KernelContext* ctx, const FullyConnectedParams& params,
                                      const QuantizedMultiplier* multipliers,  // [out_features]
                                      const FullyConnectedShape& shape, const int8_t* input,
                                      const int8_t* filter, const int32_t* bias, int8_t* output);

using AddKernel = void (*)(KernelContext* ctx, const AddParams& params, size_t count,
                           const int8_t* input1, const int8_t* input2, int8_t* output);

using Pool2dKernel = void (*)(KernelContext* ctx, const PoolParams& params,
                              const Shape4& input_shape, const int8_t* input,
                              const Shape4& output_shape, int8_t* output);

using QuantizeKernel = void (*)(KernelContext* ctx, const QuantizeParams& params, size_t count,
                                const float* input, int8_t* output);

using DequantizeKernel = void (*)(KernelContext* ctx, const QuantizeParams& params, size_t count,
                                  const int8_t* input, float* output);

// One implementation of every kernel: the interpreter runs a table, tests compare two tables.
struct KernelTable {
  const char* name;  // "reference", "fast"
  Conv2dKernel conv2d;
  DepthwiseConv2dKernel depthwise_conv2d;
  FullyConnectedKernel fully_connected;
  AddKernel add;
  Pool2dKernel average_pool2d;
  Pool2dKernel max_pool2d;
  QuantizeKernel quantize;
  DequantizeKernel dequantize;
};

}  // namespace edgeqat::runtime
