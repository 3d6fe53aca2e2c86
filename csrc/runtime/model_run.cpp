// Model execution: the activation arena (liveness-based slot reuse), the layout changes at the
// graph boundary (logical NCHW outside, NHWC inside), the kernel calls and the runtime's own
// integer loops (flatten, concat).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <new>
#include <type_traits>
#include <utility>
#include <vector>

#include "edgeqat/runtime/fast.h"
#include "edgeqat/runtime/kernels.h"
#include "model_impl.h"

namespace edgeqat::runtime::detail {
namespace {

size_t align64(size_t x) { return (x + 63) / 64 * 64; }

// Places every value of a `chunk`-sample run in one arena. A value occupies its slot from the
// step that defines it (-1: graph inputs, written before the first step) to its last reader,
// inclusive, so a step's output never overlaps its inputs (kernels need outputs that do not alias
// inputs) while values that are never alive together share memory. Greedy by size (largest
// first, each at the lowest offset free during its lifetime), as TFLite's arena planner does;
// O(values^2), done once per batch size.
void plan_arena(ModelImpl& m, int64_t chunk) {
  m.planned_chunk = 0;  // until the new arena exists (the allocation may throw)
  const size_t count = m.values.size();
  std::vector<size_t> bytes(count);
  std::vector<size_t> order(count);
  for (size_t v = 0; v < count; ++v) {
    bytes[v] = align64(static_cast<size_t>(m.dims[v].numel * chunk));
    order[v] = v;
  }
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return bytes[a] != bytes[b] ? bytes[a] > bytes[b] : m.def_step[a] < m.def_step[b];
  });
  struct Busy {
    size_t begin, end;
  };
  std::vector<size_t> placed;
  std::vector<Busy> busy;
  m.offsets.assign(count, 0);
  size_t total = 0;
  for (size_t v : order) {
    busy.clear();
    for (size_t u : placed) {
      if (m.def_step[u] <= m.last_use[v] && m.def_step[v] <= m.last_use[u]) {
        busy.push_back({m.offsets[u], m.offsets[u] + bytes[u]});
      }
    }
    std::sort(busy.begin(), busy.end(),
              [](const Busy& a, const Busy& b) { return a.begin < b.begin; });
    size_t offset = 0;
    for (const Busy& b : busy) {
      if (b.begin >= offset + bytes[v]) break;  // the gap before b is large enough
      offset = std::max(offset, b.end);
    }
    m.offsets[v] = offset;
    placed.push_back(v);
    total = std::max(total, offset + bytes[v]);
  }
  m.arena.reset();  // release the old plan's arena before allocating the new one
  m.arena_bytes = 0;
  m.arena.reset(
      static_cast<int8_t*>(::operator new(total == 0 ? 64 : total, std::align_val_t{64})));
  m.arena_bytes = total;
  m.planned_chunk = chunk;
}

// dst = the transpose of the row-major rows x cols matrix src, in 32 x 32 tiles (both the reads
// and the writes stay within a few cache lines per tile).
template <class T>
void transpose(const T* src, int64_t rows, int64_t cols, T* dst) {
  constexpr int64_t kTile = 32;
  for (int64_t i0 = 0; i0 < rows; i0 += kTile) {
    const int64_t i1 = std::min(rows, i0 + kTile);
    for (int64_t j0 = 0; j0 < cols; j0 += kTile) {
      const int64_t j1 = std::min(cols, j0 + kTile);
      for (int64_t i = i0; i < i1; ++i) {
        for (int64_t j = j0; j < j1; ++j) dst[j * rows + i] = src[i * cols + j];
      }
    }
  }
}

// n samples: NCHW ([C, HW] per sample) -> NHWC ([HW, C]) and back.
void nchw_to_nhwc(const int8_t* src, int64_t n, const ValueDims& d, int8_t* dst) {
  const int64_t hw = int64_t{d.h} * d.w;
  for (int64_t s = 0; s < n; ++s) transpose(src + s * d.numel, d.c, hw, dst + s * d.numel);
}
void nhwc_to_nchw(const int8_t* src, int64_t n, const ValueDims& d, int8_t* dst) {
  const int64_t hw = int64_t{d.h} * d.w;
  for (int64_t s = 0; s < n; ++s) transpose(src + s * d.numel, hw, d.c, dst + s * d.numel);
}

Shape4 nhwc(int n, const ValueDims& d) { return {n, d.h, d.w, d.c}; }

// One node on n samples.
void run_step(ModelImpl& m, const Step& s, int n, const std::vector<const int8_t*>& ptr,
              int8_t* y) {
  KernelContext* ctx = &m.ctx;
  const KernelTable& k = *m.table;
  const int in = s.inputs[0];
  const ValueDims& d = m.dims[in];
  const ValueDims& od = m.dims[s.output];
  const int8_t* x = ptr[in];
  switch (s.kind) {
    case StepKind::kConv2d:
      if (s.packed) {
        fast::conv2d_packed(ctx, s.conv, s.multipliers.data(), s.packed_conv, nhwc(n, d), x, s.bias,
                            nhwc(n, od), y);
      } else {
        k.conv2d(ctx, s.conv, s.multipliers.data(), nhwc(n, d), x, s.filter_shape, s.weight, s.bias,
                 nhwc(n, od), y);
      }
      break;
    case StepKind::kDepthwiseConv2d:
      if (s.packed) {
        fast::depthwise_conv2d_packed(ctx, s.depthwise, s.multipliers.data(), s.packed_depthwise,
                                      nhwc(n, d), x, s.bias, nhwc(n, od), y);
      } else {
        k.depthwise_conv2d(ctx, s.depthwise, s.multipliers.data(), nhwc(n, d), x, s.filter_shape,
                           s.weight, s.bias, nhwc(n, od), y);
      }
      break;
    case StepKind::kFullyConnected: {
      const FullyConnectedShape shape{n, d.c, od.c};
      if (s.packed) {
        fast::fully_connected_packed(ctx, s.fc, s.multipliers.data(), s.packed_fc, shape, x, s.bias,
                                     y);
      } else {
        k.fully_connected(ctx, s.fc, s.multipliers.data(), shape, x, s.weight, s.bias, y);
      }
      break;
    }
    case StepKind::kAdd:
      k.add(ctx, s.add, static_cast<size_t>(n * d.numel), x, ptr[s.inputs[1]], y);
      break;
    case StepKind::kAveragePool2d:
      k.average_pool2d(ctx, s.pool, nhwc(n, d), x, nhwc(n, od), y);
      break;
    case StepKind::kMaxPool2d:
      k.max_pool2d(ctx, s.pool, nhwc(n, d), x, nhwc(n, od), y);
      break;
    case StepKind::kFlatten: {
      // NHWC [n, h, w, c] -> [n, c * h * w] with c slowest: PyTorch's flatten of NCHW.
      nhwc_to_nchw(x, n, d, y);
      const ValueInfo& vi = m.values[in];
      if (s.clamp_min > vi.qmin || s.clamp_max < vi.qmax) {  // output grid narrower: clamp
        const int8_t lo = static_cast<int8_t>(s.clamp_min), hi = static_cast<int8_t>(s.clamp_max);
        for (int64_t i = 0; i < n * d.numel; ++i) y[i] = std::min(hi, std::max(lo, y[i]));
      }
      break;
    }
    case StepKind::kConcat: {
      // Channel concat in NHWC: per pixel, each input's channels in turn, mapped through its
      // load-time table (= clamp(requant(q - zp_i, M_i) + zp_out, act_min, act_max)).
      const int64_t pixels = int64_t{n} * d.h * d.w;
      const int out_c = od.c;
      int offset = 0;
      for (size_t i = 0; i < s.inputs.size(); ++i) {
        const int c = m.dims[s.inputs[i]].c;
        const int8_t* src = ptr[s.inputs[i]];
        const int8_t* table = s.concat_tables[i].data() + 128;  // indexed by q in [-128, 127]
        for (int64_t p = 0; p < pixels; ++p) {
          const int8_t* a = src + p * c;
          int8_t* b = y + p * out_c + offset;
          for (int j = 0; j < c; ++j) b[j] = table[a[j]];
        }
        offset += c;
      }
      break;
    }
  }
}

template <class T>
void run_impl(ModelImpl& m, const std::vector<const T*>& inputs, int64_t batch,
              const std::vector<int>& wanted, std::vector<std::vector<T>>& results) {
  constexpr bool kFloat = std::is_same_v<T, float>;
  // Samples are independent: a batch too large for the kernels' int sizes runs in chunks.
  const int64_t chunk = std::min(batch, m.max_chunk);
  if (m.planned_chunk != chunk) plan_arena(m, chunk);

  std::vector<std::vector<size_t>> emit(m.values.size());
  int64_t scratch = 0;  // float runs: int8 NCHW staging of inputs / results that need a transpose
  for (size_t r = 0; r < wanted.size(); ++r) {
    emit[static_cast<size_t>(wanted[r])].push_back(r);
    if (kFloat) scratch = std::max(scratch, m.dims[wanted[r]].numel);
  }
  if (kFloat) {
    for (int id : m.input_ids) scratch = std::max(scratch, m.dims[id].numel);
    if (static_cast<int64_t>(m.scratch.size()) < scratch * chunk) {
      m.scratch.resize(static_cast<size_t>(scratch * chunk));
    }
  }
  KernelContext* ctx = &m.ctx;
  const KernelTable& k = *m.table;
  int8_t* arena = m.arena.get();
  std::vector<const int8_t*> ptr(m.values.size(), nullptr);

  for (int64_t start = 0; start < batch; start += chunk) {
    const int64_t n = std::min(chunk, batch - start);

    // Copies value v (NHWC in ptr[v]) into the results that want it, in the logical layout.
    auto emit_value = [&](int v) {
      const ValueDims& d = m.dims[v];
      const size_t count = static_cast<size_t>(n * d.numel);
      for (size_t r : emit[v]) {
        T* dst = results[r].data() + start * d.numel;
        if constexpr (kFloat) {
          const int8_t* q = ptr[v];
          if (!d.layout_trivial()) {
            nhwc_to_nchw(q, n, d, m.scratch.data());
            q = m.scratch.data();
          }
          const ValueInfo& vi = m.values[v];
          k.dequantize(ctx, {vi.scale, vi.zero_point}, count, q, dst);
        } else if (d.layout_trivial()) {
          std::memcpy(dst, ptr[v], count);
        } else {
          nhwc_to_nchw(ptr[v], n, d, dst);
        }
      }
    };

    for (size_t i = 0; i < m.input_ids.size(); ++i) {
      const int v = m.input_ids[i];
      const ValueDims& d = m.dims[v];
      const T* src = inputs[i] + start * d.numel;
      int8_t* slot = arena + m.offsets[v];
      if constexpr (kFloat) {
        const ValueInfo& vi = m.values[v];
        const size_t count = static_cast<size_t>(n * d.numel);
        int8_t* q = d.layout_trivial() ? slot : m.scratch.data();
        k.quantize(ctx, {vi.scale, vi.zero_point}, count, src, q);
        if (vi.qmin > kInt8Min || vi.qmax < kInt8Max) {
          // A grid of fewer than 8 bits: clamp to it, as the input's fake quant does.
          const int8_t lo = static_cast<int8_t>(vi.qmin), hi = static_cast<int8_t>(vi.qmax);
          for (size_t j = 0; j < count; ++j) q[j] = std::min(hi, std::max(lo, q[j]));
        }
        // Transposing after quantizing moves a quarter of the bytes.
        if (!d.layout_trivial()) nchw_to_nhwc(q, n, d, slot);
        ptr[v] = slot;
      } else if (d.layout_trivial()) {
        ptr[v] = src;  // the kernels only read inputs: use the caller's memory
      } else {
        nchw_to_nhwc(src, n, d, slot);
        ptr[v] = slot;
      }
      emit_value(v);
    }
    for (const Step& s : m.steps) {
      int8_t* y = arena + m.offsets[s.output];
      run_step(m, s, static_cast<int>(n), ptr, y);
      ptr[s.output] = y;
      emit_value(s.output);
    }
  }
}

}  // namespace

void run_model(ModelImpl& impl, const std::vector<const int8_t*>& inputs, int64_t batch,
               const std::vector<int>& wanted, std::vector<std::vector<int8_t>>& results) {
  run_impl(impl, inputs, batch, wanted, results);
}

void run_model(ModelImpl& impl, const std::vector<const float*>& inputs, int64_t batch,
               const std::vector<int>& wanted, std::vector<std::vector<float>>& results) {
  run_impl(impl, inputs, batch, wanted, results);
}

}  // namespace edgeqat::runtime::detail
