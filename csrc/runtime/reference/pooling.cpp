// Reference max / average pooling (TFLite semantics: taps in the padding are skipped).
#include <algorithm>
#include <cstdint>

#include "edgeqat/runtime/checks.h"
#include "edgeqat/runtime/reference.h"

namespace edgeqat::runtime::reference {
namespace {

// The window of output (oy, ox) clipped to the image: [y0, y1) x [x0, x1), never empty
// (check_pool2d guarantees it).
struct Window {
  int64_t y0, y1, x0, x1;
};

Window clipped_window(const PoolParams& p, const Shape4& in, int oy, int ox) {
  const int64_t sy = int64_t{oy} * p.stride_h - p.padding.top;
  const int64_t sx = int64_t{ox} * p.stride_w - p.padding.left;
  return {std::max<int64_t>(sy, 0), std::min<int64_t>(sy + p.filter_h, in.h),
          std::max<int64_t>(sx, 0), std::min<int64_t>(sx + p.filter_w, in.w)};
}

template <class Reduce>
void pool(const PoolParams& p, const Shape4& in, const int8_t* input, const Shape4& out,
          int8_t* output, const char* fn, Reduce reduce) {
  check_pool2d(p, in, out, fn);
  check_pointer(input, num_elements(in), fn, "input");
  check_pointer(output, num_elements(out), fn, "output");
  for (int b = 0; b < out.n; ++b) {
    for (int oy = 0; oy < out.h; ++oy) {
      for (int ox = 0; ox < out.w; ++ox) {
        const Window win = clipped_window(p, in, oy, ox);
        for (int c = 0; c < out.c; ++c) {
          int32_t v = reduce(win, [&](int64_t y, int64_t x) -> int32_t {
            return input[((b * int64_t{in.h} + y) * in.w + x) * in.c + c];
          });
          v = std::min(std::max(v, p.act_min), p.act_max);
          output[((b * int64_t{out.h} + oy) * out.w + ox) * out.c + c] = static_cast<int8_t>(v);
        }
      }
    }
  }
}

}  // namespace

void average_pool2d(KernelContext* /*ctx*/, const PoolParams& p, const Shape4& in,
                    const int8_t* input, const Shape4& out, int8_t* output) {
  pool(p, in, input, out, output, "average_pool2d", [](const Window& w, auto at) {
    // At most 2^24 taps of |q| <= 128: the sum fits in int32.
    int32_t sum = 0;
    for (int64_t y = w.y0; y < w.y1; ++y) {
      for (int64_t x = w.x0; x < w.x1; ++x) sum += at(y, x);
    }
    const auto count = static_cast<int32_t>((w.y1 - w.y0) * (w.x1 - w.x0));
    // Divide rounding half away from zero (C++ division truncates toward zero).
    return sum >= 0 ? (sum + count / 2) / count : (sum - count / 2) / count;
  });
}

void max_pool2d(KernelContext* /*ctx*/, const PoolParams& p, const Shape4& in,
                const int8_t* input, const Shape4& out, int8_t* output) {
  pool(p, in, input, out, output, "max_pool2d", [](const Window& w, auto at) {
    int32_t best = kInt8Min;
    for (int64_t y = w.y0; y < w.y1; ++y) {
      for (int64_t x = w.x0; x < w.x1; ++x) best = std::max(best, at(y, x));
    }
    return best;
  });
}

}  // namespace edgeqat::runtime::reference
