// Helpers shared by the CPU kernels: how a dense tensor is walked in memory
// order, and asking the kernel for huge pages on large fresh outputs.
#pragma once

#include <ATen/core/Tensor.h>

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <optional>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace edgeqat::ops::cpu {

// [outer, channels, inner] of a dense tensor read in memory order: per tensor
// {1, 1, numel}; per channel, the dims before and after `axis` in memory.
struct Layout {
  int64_t outer, channels, inner;
  int64_t numel() const { return outer * channels * inner; }
};

inline Layout memory_layout(const at::Tensor& t, std::optional<int64_t> axis) {
  if (!axis.has_value()) {
    return {1, 1, t.numel()};
  }
  std::vector<int64_t> order(t.dim());
  std::iota(order.begin(), order.end(), 0);
  // Decreasing stride is memory order; size-1 dims may sit anywhere.
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return t.stride(a) > t.stride(b); });
  int64_t outer = 1, inner = 1;
  bool past_axis = false;
  for (const int64_t d : order) {
    if (d == *axis) {
      past_axis = true;
    } else if (past_axis) {
      inner *= t.size(d);
    } else {
      outer *= t.size(d);
    }
  }
  return {outer, t.size(*axis), inner};
}

// Fresh outputs of many MB are page-faulted in on first write, 4 KiB at a
// time: at 16M elements that costs more than the kernel itself. Where the
// kernel only backs advised regions with huge pages (THP "madvise" mode, the
// common default), ask for them on the 2 MiB-aligned interior of the buffer,
// as torch's allocator does under THP_MEM_ALLOC_ENABLE=1. Advisory only:
// values are unaffected and failure is ignored.
inline void prefer_huge_pages(const at::Tensor& t) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHugePage = uintptr_t{2} << 20;
  const size_t nbytes = t.numel() * t.element_size();
  if (nbytes < 2 * kHugePage) {
    return;
  }
  const auto begin = reinterpret_cast<uintptr_t>(t.data_ptr());
  const uintptr_t first = (begin + kHugePage - 1) & ~(kHugePage - 1);
  const uintptr_t last = (begin + nbytes) & ~(kHugePage - 1);
  if (last > first) {
    madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE);
  }
#endif
}

}  // namespace edgeqat::ops::cpu
