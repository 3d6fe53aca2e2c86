// Internal: the per-ISA inner kernels of the fast runtime and the data layouts they share with
// the driver code (gemm.cpp, depthwise.cpp).
//
// Each ISA's kernels live in their own translation unit compiled with that ISA's flags
// (isa_avx512_vnni.cpp: -mavx512f -mavx512bw -mavx512vl -mavx512vnni; isa_avx2.cpp: -mavx2;
// isa_portable.cpp: the default flags). Those units must not emit any function with vague
// linkage (inline functions, templates, the standard library's containers): the linker keeps one
// copy of such a function for the whole program and might keep the AVX-512 one, which would
// then run on a CPU without AVX-512. So they include only this header and <immintrin.h>, keep
// every helper `static`, and export plain functions through the IsaKernels tables below, which
// the driver only calls after __builtin_cpu_supports said yes.
#pragma once

#include <cstddef>
#include <cstdint>

namespace edgeqat::runtime::fast::detail {

enum class Isa : int { kPortable = 0, kAvx2 = 1, kAvx512Vnni = 2 };
inline constexpr int kNumIsas = 3;

// The output stage, per output channel: arrays of at least (channels rounded up to 64) entries,
// the padding entries zero. For output channel n of a raw int32 accumulator acc:
//   x   = acc + offset[n]                       (mod 2^32; exact, see gemm.cpp)
//   x   = saturate_int32(int64(x) + bias[n])    (bias all 0 when the kernel got none)
//   r   = (int64(x) * multiplier[n] + 2^(right_shift[n] - 1)) >> right_shift[n]
//   out = clamp(r, out_min, out_max) + zero_point
// which is requantize_output (requantize.h) with right_shift = 31 - shift: clamping r to
// [act_min - zp, act_max - zp] (both within [-255, 255]) before adding zp equals saturating r to
// int32, adding zp and clamping to [act_min, act_max].
struct OutputStage {
  const int32_t* offset;
  const int32_t* bias;
  const int32_t* multiplier;
  const int32_t* right_shift;  // in [1, 62]; padding entries 31 (with multiplier 0: r = 0)
  int32_t out_min, out_max;
  int32_t zero_point;
};

// GEMM layouts. C[m][n] = sum_k A[m][k] * B[k][n] over a depth K padded to kp (a multiple of
// kgroup); the padding has zero weights.
//  - A: m rows of kp elements, row stride lda bytes.
//      a_elem == 1 (VNNI): uint8 q ^ 0x80 = q + 128; taps in the conv padding hold
//                          input_zero_point + 128, the depth padding 0.
//      a_elem == 2:        int16 q - input_zero_point; conv and depth padding 0.
//  - B: panels of `panel` output channels (the last one narrower: channels rounded up to
//    n_unit), panel j at element offset j * panel * kp; inside a panel of width w:
//    [kp / kgroup][w][kgroup] elements (int8 for a_elem 1, int16 for a_elem 2).
//    Channels beyond N (up to the rounding) have zero weights.
// For a_elem == 1 the sums are sum (q + 128) * w: the driver puts -(128 + zp_in) * sum_k w[k][n]
// into OutputStage::offset, which makes them sum (q - zp_in) * w (exact mod 2^32, and the true
// value fits in int32, so the wrapped int32 result is the true one).
struct GemmArgs {
  const uint8_t* a;
  size_t lda;  // bytes
  int m;
  const void* b;  // the packed B of this group (panel 0)
  int kp;
  int n_begin, n_end;  // output channels [n_begin, n_end); n_begin a multiple of panel
  int n_total;         // N: channels of this group (the width of the last panel follows)
  int8_t* c;           // C row r, channel n at c[r * ldc + n]
  size_t ldc;
  const OutputStage* stage;  // arrays indexed by channel n (of this group)
};

// Depthwise conv of one output row (all output columns, all channels), multiplier 1 (the driver
// expands the input channels first when the depth multiplier is larger).
// weights: int16 [kh * kw][cp], cp = channels rounded up to 64, padding 0.
// The taps of output (oy, ox) are input (oy * stride_h - pad_top + ky * dilation_h,
// ox * stride_w - pad_left + kx * dilation_w); taps outside the image are skipped.
struct DepthwiseRowArgs {
  const int8_t* input;  // one image, NHWC [in_h, in_w, channels]
  int in_h, in_w, channels;
  const int16_t* weights;
  int kh, kw, cp;
  int oy, out_w;
  int stride_h, stride_w, dilation_h, dilation_w, pad_top, pad_left;
  int32_t input_zero_point;
  int8_t* output;  // the output row: [out_w, channels]
  int32_t* acc;    // scratch of cp int32 (for kernels that want it)
  const OutputStage* stage;
};

using GemmFn = void (*)(const GemmArgs&);
using DepthwiseRowFn = void (*)(const DepthwiseRowArgs&);

struct IsaKernels {
  Isa isa;
  const char* name;
  int a_elem;  // 1 or 2, see above
  int kgroup;  // depth elements per group (4 for VNNI, 2 for int16 pairs)
  int panel;   // channels per B panel
  int n_unit;  // panel width granularity
  int mr;      // GEMM rows per micro tile (a blocking hint)
  GemmFn gemm;
  DepthwiseRowFn depthwise_row;
};

extern const IsaKernels kPortableKernels;
#if defined(EDGEQAT_RUNTIME_X86)
extern const IsaKernels kAvx2Kernels;
extern const IsaKernels kAvx512VnniKernels;
#endif

}  // namespace edgeqat::runtime::fast::detail
