// Reference int8 kernels: plain loops, the definition of the runtime's arithmetic.
//
// Each one validates its arguments (checks.h) and throws std::invalid_argument on bad ones, then
// computes with integers only (quantize / dequantize, at the graph boundary, use float32).
// Signatures are the ones in kernels.h; layouts and formulas are documented in types.h and
// docs/runtime-numerics.md. The context argument may be null and is ignored.
#pragma once

#include <cstddef>
#include <cstdint>

#include "edgeqat/runtime/kernels.h"

namespace edgeqat::runtime::reference {

// input NHWC [n, h, w, c_in]; filter OHWI [c_out, kh, kw, c_in / groups];
// output NHWC [n, oh, ow, c_out] with oh, ow given by window_output_size.
void conv2d(KernelContext* ctx, const ConvParams& params, const QuantizedMultiplier* multipliers,
            const Shape4& input_shape, const int8_t* input, const Shape4& filter_shape,
            const int8_t* filter, const int32_t* bias, const Shape4& output_shape, int8_t* output);

// input NHWC [n, h, w, c]; filter [1, kh, kw, c * depth_multiplier];
// output NHWC [n, oh, ow, c * depth_multiplier], channel oc reads input channel oc / multiplier.
void depthwise_conv2d(KernelContext* ctx, const DepthwiseConvParams& params,
                      const QuantizedMultiplier* multipliers, const Shape4& input_shape,
                      const int8_t* input, const Shape4& filter_shape, const int8_t* filter,
                      const int32_t* bias, const Shape4& output_shape, int8_t* output);

// input [batch, in_features]; filter [out_features, in_features]; output [batch, out_features].
void fully_connected(KernelContext* ctx, const FullyConnectedParams& params,
                     const QuantizedMultiplier* multipliers, const FullyConnectedShape& shape,
                     const int8_t* input, const int8_t* filter, const int32_t* bias,
                     int8_t* output);

// Elementwise over `count` values; both inputs have the output's shape.
void add(KernelContext* ctx, const AddParams& params, size_t count, const int8_t* input1,
         const int8_t* input2, int8_t* output);

// Average of the raw int8 values of the taps inside the image, divided by their count with
// ties away from zero, clamped. Global pooling: make_global_pool_params.
void average_pool2d(KernelContext* ctx, const PoolParams& params, const Shape4& input_shape,
                    const int8_t* input, const Shape4& output_shape, int8_t* output);

// Maximum over the taps inside the image, clamped.
void max_pool2d(KernelContext* ctx, const PoolParams& params, const Shape4& input_shape,
                const int8_t* input, const Shape4& output_shape, int8_t* output);

// q = clamp(round_half_to_even(x / scale) + zero_point, -128, 127) in float32;
// NaN -> zero_point (real 0), +-inf saturate.
void quantize(KernelContext* ctx, const QuantizeParams& params, size_t count, const float* input,
              int8_t* output);

// x = float(q - zero_point) * scale in float32.
void dequantize(KernelContext* ctx, const QuantizeParams& params, size_t count,
                const int8_t* input, float* output);

// Compile-time proof that the reference kernels have the shared signatures.
inline constexpr Conv2dKernel kConv2d = &conv2d;
inline constexpr DepthwiseConv2dKernel kDepthwiseConv2d = &depthwise_conv2d;
inline constexpr FullyConnectedKernel kFullyConnected = &fully_connected;
inline constexpr AddKernel kAdd = &add;
inline constexpr Pool2dKernel kAveragePool2d = &average_pool2d;
inline constexpr Pool2dKernel kMaxPool2d = &max_pool2d;
inline constexpr QuantizeKernel kQuantize = &quantize;
inline constexpr DequantizeKernel kDequantize = &dequantize;

// The reference kernels as a table (name "reference").
const KernelTable& kernels();

}  // namespace edgeqat::runtime::reference
