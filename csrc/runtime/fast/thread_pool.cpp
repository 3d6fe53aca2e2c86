#include "thread_pool.h"

#include <chrono>

namespace edgeqat::runtime::fast::detail {
namespace {

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#else
  std::this_thread::yield();
#endif
}

// How long a worker spins for the next run (and the caller for the last tasks) before blocking.
constexpr auto kSpin = std::chrono::microseconds(200);

}  // namespace

ThreadPool::ThreadPool(int num_threads) {
  const int workers = num_threads > 1 ? num_threads - 1 : 0;
  workers_.reserve(static_cast<size_t>(workers));
  for (int i = 0; i < workers; ++i) workers_.emplace_back([this, i] { worker_loop(i + 1); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  start_cv_.notify_all();
  for (auto& w : workers_) w.join();
}

void ThreadPool::work(int thread) {
  for (;;) {
    const int task = next_task_.fetch_add(1, std::memory_order_relaxed);
    if (task >= num_tasks_) return;
    try {
      call_(fn_, task, thread);
    } catch (...) {
      std::lock_guard<std::mutex> lock(mu_);
      if (!error_) error_ = std::current_exception();
    }
    // acq_rel: the task's writes happen before the caller sees the count complete.
    if (tasks_done_.fetch_add(1, std::memory_order_acq_rel) + 1 == num_tasks_) {
      std::lock_guard<std::mutex> lock(mu_);  // orders the notification after the caller's check
      done_cv_.notify_one();
    }
  }
}

void ThreadPool::worker_loop(int thread) {
  uint64_t seen = 0;
  for (;;) {
    const auto spin_until = std::chrono::steady_clock::now() + kSpin;
    while (generation_.load(std::memory_order_acquire) == seen &&
           std::chrono::steady_clock::now() < spin_until) {
      for (int i = 0; i < 64; ++i) cpu_relax();
    }
    {
      std::unique_lock<std::mutex> lock(mu_);
      start_cv_.wait(lock,
                     [&] { return stop_ || generation_.load(std::memory_order_relaxed) != seen; });
      if (stop_) return;
      // Joining under the mutex: run_impl changes the run's fields only under the mutex and
      // with no worker joined, so the fields stay those of generation `seen` until we leave.
      seen = generation_.load(std::memory_order_relaxed);
      joined_.fetch_add(1, std::memory_order_relaxed);
    }
    work(thread);
    joined_.fetch_sub(1, std::memory_order_release);
  }
}

void ThreadPool::run_impl(int num_tasks, TaskFn call, void* fn) {
  {
    std::unique_lock<std::mutex> lock(mu_);
    // A worker that joined the previous run late may still be on its way out (it finds no task
    // left): wait for it before overwriting the fields it reads.
    while (joined_.load(std::memory_order_acquire) != 0) {
      lock.unlock();
      std::this_thread::yield();
      lock.lock();
    }
    call_ = call;
    fn_ = fn;
    num_tasks_ = num_tasks;
    error_ = nullptr;
    next_task_.store(0, std::memory_order_relaxed);
    tasks_done_.store(0, std::memory_order_relaxed);
    generation_.fetch_add(1, std::memory_order_release);
  }
  start_cv_.notify_all();
  work(0);
  // Wait for the tasks that workers took, not for the workers themselves.
  const auto spin_until = std::chrono::steady_clock::now() + kSpin;
  while (tasks_done_.load(std::memory_order_acquire) != num_tasks &&
         std::chrono::steady_clock::now() < spin_until) {
    cpu_relax();
  }
  std::exception_ptr error;
  {
    std::unique_lock<std::mutex> lock(mu_);
    done_cv_.wait(lock, [&] { return tasks_done_.load(std::memory_order_acquire) == num_tasks; });
    error = error_;
    error_ = nullptr;
  }
  if (error) std::rethrow_exception(error);
}

}  // namespace edgeqat::runtime::fast::detail
