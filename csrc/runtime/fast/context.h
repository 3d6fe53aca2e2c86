// Internal: what a KernelContext holds for the fast kernels: the thread pool and scratch memory,
// both created on first use and reused by later calls.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "edgeqat/runtime/kernels.h"
#include "thread_pool.h"

namespace edgeqat::runtime::detail {

// A growable 64-byte-aligned buffer; contents are not kept when it grows.
class ScratchBuffer {
 public:
  uint8_t* get(size_t bytes);  // at least `bytes`, 64-byte aligned

 private:
  struct Free {
    void operator()(uint8_t* p) const;
  };
  std::unique_ptr<uint8_t, Free> data_;
  size_t size_ = 0;
};

class KernelResources {
 public:
  // The pool for `threads` threads, (re)created when the count changes.
  fast::detail::ThreadPool& pool(int threads);

  // Per-thread scratch (thread in [0, threads)): call thread_scratch_reserve before a parallel
  // run so that tasks only read pointers (no allocation, no shared state inside a run).
  void thread_scratch_reserve(int threads, size_t bytes);
  uint8_t* thread_scratch(int thread) { return thread_ptrs_[static_cast<size_t>(thread)]; }

  // Call-level scratch buffers, `slot` in [0, kSharedSlots).
  static constexpr int kSharedSlots = 5;
  uint8_t* shared(int slot, size_t bytes) { return shared_[slot].get(bytes); }

 private:
  std::unique_ptr<fast::detail::ThreadPool> pool_;
  std::vector<ScratchBuffer> thread_;
  std::vector<uint8_t*> thread_ptrs_;
  ScratchBuffer shared_[kSharedSlots];
};

// The resources of ctx (created on first use), and the thread count a call uses (>= 1).
KernelResources& resources(KernelContext& ctx);
inline int thread_count(const KernelContext& ctx) {
  return ctx.num_threads > 1 ? ctx.num_threads : 1;
}

// The thread count for a kernel call of `work` units (multiply-accumulates, or taps x
// outputs): 1 below ctx.min_parallel_work, else ctx's. Handing tasks to the pool costs a
// wake-up and a join, a few microseconds, and exposes the call to a worker that the OS has
// descheduled (the caller then waits for the task that worker holds). Measured on MobileNet v2
// at 28x28, batch 1, 2 threads: with every layer split, the whole net ran slower than on 1
// thread (0.14-0.22 ms vs 0.12 ms).
inline int thread_count(const KernelContext& ctx, int64_t work) {
  return work < ctx.min_parallel_work ? 1 : thread_count(ctx);
}

// Runs fn(task, thread) for every task in [0, tasks) on `threads` threads (1, or
// thread_count(ctx)); thread in [0, threads).
template <class Fn>
void parallel_for(KernelContext& ctx, int threads, int tasks, Fn&& fn) {
  if (threads <= 1 || tasks <= 1) {
    for (int t = 0; t < tasks; ++t) fn(t, 0);
    return;
  }
  resources(ctx).pool(threads).run(tasks, fn);
}

// The same on all of ctx's threads.
template <class Fn>
void parallel_for(KernelContext& ctx, int tasks, Fn&& fn) {
  parallel_for(ctx, thread_count(ctx), tasks, std::forward<Fn>(fn));
}

}  // namespace edgeqat::runtime::detail
