// Internal: the ISA-independent parts of the fast kernels (packing, im2col, blocking, threads),
// shared by gemm.cpp, depthwise.cpp and table.cpp. Compiled with the default flags only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "edgeqat/runtime/fast.h"
#include "edgeqat/runtime/kernels.h"
#include "isa.h"

namespace edgeqat::runtime::fast::detail {

// The kernels of `isa`; only call for an ISA that isa_supported() says this CPU runs.
const IsaKernels& isa_kernels(Isa isa);
bool isa_supported(Isa isa);
// The supported ISA called `name` (empty: active_isa()); otherwise throws std::invalid_argument
// from function `fn` naming it.
Isa isa_from_name(const std::string& name, const char* fn);
const char* isa_name(Isa isa);

// GEMM weights in the layout of isa.h, wherever they are stored.
struct GemmWeightsView {
  const IsaKernels* isa;
  const uint8_t* data;  // group g at data + g * group_stride
  size_t group_stride;  // bytes
  int groups, n, depth, depth_padded;
  const int32_t* weight_sums;  // [groups * n], needed for a_elem == 1
};

// Sizes of the packed layout of `groups` x n channels of depth `depth` for `isa`.
struct PackedSizes {
  int depth_padded;
  size_t group_stride, bytes;
};
PackedSizes packed_sizes(const IsaKernels& isa, int groups, int n, int depth);

// Packs w [groups][n][depth] (int8, depth contiguous) into dst (sizes.bytes, 64-byte aligned)
// and, if weight_sums is not null, writes sum_k w per channel there.
void pack_gemm_weights(const IsaKernels& isa, const int8_t* w, int groups, int n, int depth,
                       const PackedSizes& sizes, uint8_t* dst, int32_t* weight_sums);

// Conv2d on packed weights, arguments already validated (check_conv2d etc.).
void conv2d_gemm(KernelContext* ctx, const ConvParams& p, const QuantizedMultiplier* multipliers,
                 const Shape4& in, const int8_t* input, const Shape4& filter_shape,
                 const GemmWeightsView& w, const int32_t* bias, const Shape4& out, int8_t* output);

// The validated table kernels for one ISA (gemm.cpp, depthwise.cpp).
void conv2d_isa(Isa isa, KernelContext* ctx, const ConvParams& params,
                const QuantizedMultiplier* multipliers, const Shape4& input_shape,
                const int8_t* input, const Shape4& filter_shape, const int8_t* filter,
                const int32_t* bias, const Shape4& output_shape, int8_t* output);
void fully_connected_isa(Isa isa, KernelContext* ctx, const FullyConnectedParams& params,
                         const QuantizedMultiplier* multipliers, const FullyConnectedShape& shape,
                         const int8_t* input, const int8_t* filter, const int32_t* bias,
                         int8_t* output);
void add_isa(Isa isa, KernelContext* ctx, const AddParams& params, size_t count,
             const int8_t* input1, const int8_t* input2, int8_t* output);
void depthwise_conv2d_isa(Isa isa, KernelContext* ctx, const DepthwiseConvParams& params,
                          const QuantizedMultiplier* multipliers, const Shape4& input_shape,
                          const int8_t* input, const Shape4& filter_shape, const int8_t* filter,
                          const int32_t* bias, const Shape4& output_shape, int8_t* output);

// The output stage arrays (isa.h) for `channels` output channels, in scratch: offsets from the
// weight sums when a_elem == 1 (else 0), bias (0 if null), multiplier, right shift.
OutputStage make_output_stage(uint8_t* scratch, int channels, const QuantizedMultiplier* m,
                              const int32_t* bias, const int32_t* weight_sums,
                              int32_t input_zero_point, int32_t output_zero_point, int32_t act_min,
                              int32_t act_max, int64_t depth);
// Runs prepare (if not null) for every group of channels_per_group channels into scratch
// (groups * round_up(channels_per_group, 64) * kPreparedBytesPerChannel bytes, 64-byte aligned)
// and points stage.prepared at it; group g's part starts at g times the per-group size.
void prepare_output_stage(PrepareStageFn prepare, uint8_t* scratch, int groups,
                          int channels_per_group, OutputStage& stage);
inline size_t output_stage_bytes(int channels) {
  return 4 * (static_cast<size_t>(channels) + 64) * sizeof(int32_t);
}

}  // namespace edgeqat::runtime::fast::detail
