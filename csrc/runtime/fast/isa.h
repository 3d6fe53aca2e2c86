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
// bias_saturates is 0 when no |bias[n]| is within (max |x|) of the int32 limits, with
// max |x| = 32640 * depth: then x + bias cannot overflow and kernels may skip the saturation.
// narrow is 1 when every shift is <= 0 (right_shift >= 31): then r fits in int32 (|x| <= 2^31,
// multiplier < 2^31) and kernels may clamp in 32-bit lanes.
// prepared: the ISA's per-channel constants made by IsaKernels::prepare_stage (or null).
struct OutputStage {
  const int32_t* offset;
  const int32_t* bias;
  const int32_t* multiplier;
  const int32_t* right_shift;  // in [1, 62]; padding entries 31 (with multiplier 0: r = 0)
  int32_t out_min, out_max;
  int32_t zero_point;
  int32_t bias_saturates;
  int32_t narrow;
  const void* prepared;
};

// Precomputes an ISA's constants for channels [0, channels) of stage (channels a multiple of
// 16) into dst: kPreparedBytesPerChannel bytes per channel, 64-byte aligned.
using PrepareStageFn = void (*)(const OutputStage& stage, int channels, void* dst);
inline constexpr size_t kPreparedBytesPerChannel = 32;

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
// expands the input channels first when the depth multiplier is larger). Taps t = ky * kw + kx;
// the tap of output (oy, ox) is input (oy * stride_h - pad_top + ky * dilation_h,
// ox * stride_w - pad_left + kx * dilation_w); taps outside the image contribute nothing.
// Weight layouts (dw_layout):
//   kDepthwiseInt16: int16 [taps][cp], cp = channels rounded up to 64, zero padding; the kernel
//                    sums w * (q - zp) (|.| <= 32640: exact in int16 lanes too).
//   kDepthwiseVnni:  for vpdpbusd, four taps per int32 lane: blocks of 64 channels, each
//                    [ceil(taps / 4) tap groups][4 vectors j][16 lanes l][4 taps i] int8 with
//                    lane l of vector j = channel 64 b + 16 (l / 4) + 4 j + l % 4 (the order
//                    unpacklo / unpackhi produce) and tap 4 g + i; zero for missing taps and
//                    channels; with at most 32 channels, channels 32..63 of the block repeat
//                    channels 0..31 (the kernel then computes two pixels per vector; the
//                    driver repeats them in the stage too). The kernel sums (q + 128) * w with
//                    padding taps fed q = zp, and OutputStage::offset = -(128 + zp) * sum_t w
//                    as for the GEMM.
enum DepthwiseLayout : int { kDepthwiseInt16 = 0, kDepthwiseVnni = 1 };

struct DepthwiseRowArgs {
  const int8_t* input;  // one image, NHWC [in_h, in_w, channels]
  int in_h, in_w, channels;
  const void* weights;  // the ISA's layout
  int kh, kw, cp;       // cp: channels rounded up to 64
  int oy, out_w;
  int stride_h, stride_w, dilation_h, dilation_w, pad_top, pad_left;
  int32_t input_zero_point;
  int8_t* output;      // the output row: [out_w, channels]
  int c_begin, c_end;  // the channels to compute: c_begin a multiple of 64, c_end <= channels
  void* scratch;       // per-thread scratch of depthwise_scratch_bytes(kh * kw, cp) bytes
  const OutputStage* stage;
};
inline size_t depthwise_scratch_bytes(int taps, int cp) {
  const size_t a = static_cast<size_t>(cp) * 4, b = (static_cast<size_t>(taps) + 4) * 16;
  return a > b ? a : b;
}

// Elementwise add (AddParams' arithmetic) of count values.
struct AddArgs {
  const int8_t* a;
  const int8_t* b;
  int8_t* out;
  size_t count;
  int32_t zp1, zp2, left_shift;
  int32_t m1, rs1, m2, rs2, mo, rso;     // multipliers and right shifts (31 - shift)
  int32_t out_min, out_max, zero_point;  // clamp of the requantized sum, before adding zp
};

// A GEMM with few rows straight from unpacked weights (no packing: the table fully_connected
// with a small batch): C[r][n] for r < m (<= kGemvMaxRows), n in [n_begin, n_end), n_begin a
// multiple of 16, of sum_k A[r][k] * w[n][k] with w [N][depth] int8 (row-major, unpadded).
// A: the ISA's A format (rows of lda bytes) with zeros from depth up to a multiple of 64 bytes.
// For a_elem 1 the kernel itself subtracts (128 + input_zero_point) * sum_k w[n][k], so the
// stage's offsets must be 0.
inline constexpr int kGemvMaxRows = 4;
struct GemvArgs {
  const uint8_t* a;
  size_t lda;
  int m;
  const int8_t* w;
  int depth;
  int n_begin, n_end;
  int32_t input_zero_point;
  int8_t* c;  // C row r, channel n at c[r * ldc + n]
  size_t ldc;
  const OutputStage* stage;
};

// Max pooling of one output pixel: out[c] = clamp(max over the window of the tap's byte c,
// lo, hi) for c < channels, taps at first + y * row_stride + x * channels for y < rows,
// x < cols (the window already clipped to the image, never empty).
struct MaxWindowArgs {
  const int8_t* first;
  int rows, cols, channels;
  size_t row_stride;
  int8_t lo, hi;
  int8_t* out;
};

// Quantize (the reference's float32 semantics): out[i] = clamp(round_half_to_even(
// clamp(x[i] / scale, -1024, 1024)) + zero_point, -128, 127), NaN -> zero_point.
struct QuantizeArgs {
  const float* x;
  size_t count;
  float scale;
  int32_t zero_point;
  int8_t* out;
};

using GemmFn = void (*)(const GemmArgs&);
using GemvFn = void (*)(const GemvArgs&);
using DepthwiseRowFn = void (*)(const DepthwiseRowArgs&);
using AddFn = void (*)(const AddArgs&);
using MaxWindowFn = void (*)(const MaxWindowArgs&);
using QuantizeFn = void (*)(const QuantizeArgs&);

struct IsaKernels {
  Isa isa;
  const char* name;
  int a_elem;  // 1 or 2, see above
  int kgroup;  // depth elements per group (4: VNNI, 2: AVX2 vpmaddwd pairs, 1: portable)
  int panel;   // channels per B panel
  int n_unit;  // panel width granularity
  int mr;      // GEMM rows per micro tile (a blocking hint)
  GemmFn gemm;
  GemvFn gemv;
  int dw_layout;  // DepthwiseLayout
  DepthwiseRowFn depthwise_row;
  AddFn add;                               // null: the portable table-based loop
  MaxWindowFn max_window;                  // null: plain loops
  QuantizeFn quantize;                     // null: plain loops
  PrepareStageFn prepare_stage;            // null: kernels read OutputStage's arrays
  PrepareStageFn prepare_depthwise_stage;  // the depthwise kernel's (null: prepare_stage)
};

extern const IsaKernels kPortableKernels;
#if defined(EDGEQAT_RUNTIME_X86)
extern const IsaKernels kAvx2Kernels;
extern const IsaKernels kAvx512VnniKernels;
#endif

}  // namespace edgeqat::runtime::fast::detail
