// Validation of kernel arguments, shared by every implementation of a kernel (reference and fast).
//
// Each function is O(1) in the tensor sizes (the multiplier checks are O(channels)) and throws
// std::invalid_argument with a message that names the kernel, the argument and its value.
// The reference kernels call them on every call; an interpreter can call them once per node at
// load time and then run fast kernels without re-checking.
#pragma once

#include <cstddef>
#include <cstdint>

#include "edgeqat/runtime/requantize.h"
#include "edgeqat/runtime/types.h"

namespace edgeqat::runtime {

// Output size of a strided, dilated, padded window along one axis:
//   (input + pad_before + pad_after - ((kernel - 1) * dilation + 1)) / stride + 1   (floor)
// Throws if an argument is out of range or the dilated kernel is larger than the padded input.
// `kernel_name` and `axis` ("h" / "w") go into the message.
int window_output_size(int input, int kernel, int stride, int dilation, int pad_before,
                       int pad_after, const char* kernel_name, const char* axis);

void check_conv2d(const ConvParams& params, const Shape4& input_shape, const Shape4& filter_shape,
                  const Shape4& output_shape);
void check_depthwise_conv2d(const DepthwiseConvParams& params, const Shape4& input_shape,
                            const Shape4& filter_shape, const Shape4& output_shape);
void check_fully_connected(const FullyConnectedParams& params, const FullyConnectedShape& shape);
void check_add(const AddParams& params);
// Also checks that every window has at least one tap inside the image.
void check_pool2d(const PoolParams& params, const Shape4& input_shape, const Shape4& output_shape,
                  const char* kernel_name);
void check_quantize_params(const QuantizeParams& params, const char* kernel_name);

// `count` multipliers, each passing check_quantized_multiplier; names the bad index.
void check_multipliers(const QuantizedMultiplier* multipliers, int count, const char* kernel_name);

// Shared pieces, exposed for other kernels (concat, requantize ...) added later.
void check_zero_point(int32_t zero_point, const char* kernel_name, const char* arg);
void check_activation_range(int32_t act_min, int32_t act_max, const char* kernel_name);
// Throws if ptr is null while `elements` > 0.
void check_pointer(const void* ptr, int64_t elements, const char* kernel_name, const char* arg);

}  // namespace edgeqat::runtime
