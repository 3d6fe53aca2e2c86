// Internal: the fast kernels' thread pool (std::thread + condition variables, no OpenMP).
//
// A pool of `num_threads - 1` workers; the calling thread takes part as thread 0. run() hands out
// task indices dynamically (an atomic counter), so which thread computes a task varies from run
// to run: kernels split work so that every output is computed by the same code whichever thread
// runs it (integer arithmetic, no cross-task reductions), which keeps results independent of the
// thread count and of scheduling.
//
// run() returns as soon as every task has finished: it does not wait for workers that were slow
// to wake up (on a loaded machine a sleeping worker can take milliseconds to get a CPU; the
// caller then simply runs more of the tasks itself). A worker joins a run under the mutex, and
// the next run() waits for the workers that joined the previous one to leave before it reuses
// the run's fields. After a run, workers spin for a short while before they sleep, so that the
// next kernel of a network (typically tens of microseconds later) does not pay a futex wake-up.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <mutex>
#include <thread>
#include <type_traits>
#include <vector>

namespace edgeqat::runtime::fast::detail {

class ThreadPool {
 public:
  explicit ThreadPool(int num_threads);  // num_threads >= 1 (1: no worker)
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const { return static_cast<int>(workers_.size()) + 1; }

  // Calls fn(task, thread) for every task in [0, num_tasks), thread in [0, num_threads()), and
  // returns when all have finished. The first exception thrown by a task is rethrown here (the
  // other tasks still run). Not reentrant: one run at a time.
  template <class Fn>
  void run(int num_tasks, Fn&& fn) {
    if (num_tasks <= 0) return;
    if (num_tasks == 1 || workers_.empty()) {
      for (int t = 0; t < num_tasks; ++t) fn(t, 0);
      return;
    }
    using F = std::remove_reference_t<Fn>;
    run_impl(
        num_tasks, [](void* f, int task, int thread) { (*static_cast<F*>(f))(task, thread); },
        const_cast<void*>(static_cast<const void*>(&fn)));
  }

 private:
  using TaskFn = void (*)(void* fn, int task, int thread);
  void run_impl(int num_tasks, TaskFn call, void* fn);
  void worker_loop(int thread);
  void work(int thread);

  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable start_cv_, done_cv_;
  std::atomic<uint64_t> generation_{0};  // bumped (under mu_) when a run starts
  bool stop_ = false;                    // guarded by mu_
  // The current run: written by run_impl (under mu_, with no worker joined) before generation_
  // is bumped; read by workers that joined it.
  TaskFn call_ = nullptr;
  void* fn_ = nullptr;
  int num_tasks_ = 0;
  std::atomic<int> next_task_{0};
  std::atomic<int> tasks_done_{0};
  std::atomic<int> joined_{0};  // workers inside the current (or the last) run
  std::exception_ptr error_;    // guarded by mu_
};

}  // namespace edgeqat::runtime::fast::detail
