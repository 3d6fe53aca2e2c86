#include "context.h"

#include <cstdlib>
#include <new>

#include "edgeqat/runtime/kernels.h"

namespace edgeqat::runtime {

KernelContext::KernelContext() noexcept = default;
KernelContext::KernelContext(int threads) noexcept : num_threads(threads) {}
KernelContext::KernelContext(KernelContext&&) noexcept = default;
KernelContext& KernelContext::operator=(KernelContext&&) noexcept = default;
KernelContext::~KernelContext() = default;

namespace detail {

void ScratchBuffer::Free::operator()(uint8_t* p) const { std::free(p); }

uint8_t* ScratchBuffer::get(size_t bytes) {
  if (bytes > size_ || !data_) {
    // Grow geometrically (by half) so alternating sizes do not reallocate every call; round to
    // whole cache lines as aligned_alloc wants a multiple of the alignment.
    size_t want = bytes > size_ + size_ / 2 ? bytes : size_ + size_ / 2;
    want = (want + 63) / 64 * 64;
    if (want == 0) want = 64;
    data_.reset();
    size_ = 0;
    auto* p = static_cast<uint8_t*>(std::aligned_alloc(64, want));
    if (p == nullptr) throw std::bad_alloc();
    data_.reset(p);
    size_ = want;
  }
  return data_.get();
}

fast::detail::ThreadPool& KernelResources::pool(int threads) {
  if (!pool_ || pool_->num_threads() != threads) {
    pool_.reset();  // join the old workers first
    pool_ = std::make_unique<fast::detail::ThreadPool>(threads);
  }
  return *pool_;
}

void KernelResources::thread_scratch_reserve(int threads, size_t bytes) {
  if (thread_.size() < static_cast<size_t>(threads)) thread_.resize(static_cast<size_t>(threads));
  thread_ptrs_.resize(thread_.size());
  for (int t = 0; t < threads; ++t) thread_ptrs_[t] = thread_[t].get(bytes);
}

KernelResources& resources(KernelContext& ctx) {
  if (!ctx.resources) ctx.resources = std::make_unique<KernelResources>();
  return *ctx.resources;
}

}  // namespace detail
}  // namespace edgeqat::runtime
