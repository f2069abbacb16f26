// A small pool of std::threads owned by one Engine (no OpenMP runtime to
// clash with PyTorch's or NumPy's). One job runs at a time: a caller first
// takes the pool with try_lock(), then run(fn) calls fn(0) on the calling
// thread and fn(1..n-1) on the workers and returns when all have returned.
// A caller that finds the pool taken (another thread's predict() is using
// it) runs its call alone on its own thread, so concurrent calls never
// oversubscribe the pool's cores and never wait on each other.
//
// Workers spin briefly (1 ms) after a job, so back-to-back calls start
// without a futex wake-up, then sleep on a condition variable: no core stays
// busy once calls stop. A worker that wakes up on the CPU of a thread already
// in the job moves itself, for that job, to a CPU the job is not using (Linux;
// only among the CPUs the process could use when the pool was made).
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "engine/function_ref.h"

namespace rnninfer {

class ThreadPool {
 public:
  explicit ThreadPool(int threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return static_cast<int>(workers_.size()) + 1; }

  // The pool for one job, or an unowned lock if another caller has it.
  std::unique_lock<std::mutex> try_lock() { return std::unique_lock<std::mutex>(busy_, std::try_to_lock); }

  // Runs fn(0) on the caller and offers fn(i), i in [1, size()), to the
  // workers; returns when fn(0) has returned and every worker that took its
  // part has finished it. A worker that has not started by the time fn(0)
  // returns does not run its part at all, so fn must get all the work done
  // with whichever threads show up (the engine's threads claim work units;
  // the caller does what nobody claimed). The caller holds try_lock().
  void run(FunctionRef<void(int)> fn);

 private:
  void worker_main(int index);
  // Called by worker `index` as it enters a job: records its CPU, and if a
  // thread of the job with a lower index is on the same CPU, narrows this
  // thread's CPU mask to the process's CPUs the job is not using. Returns
  // whether it did (the worker widens the mask again after the job).
  bool avoid_shared_cpu(int index);
  void restore_cpus();

  std::mutex busy_;  // held by the caller for the whole job
  // CPU of each thread in the current job (index 0 is the caller), -1 unknown.
  std::unique_ptr<std::atomic<int>[]> cpu_of_;
  std::vector<int> process_cpus_;  // CPUs the process could run on when the pool was made
  std::mutex mu_;
  std::condition_variable wake_;
  std::condition_variable done_;
  const FunctionRef<void(int)>* job_ = nullptr;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> active_{0};  // workers inside the current job
  std::atomic<bool> caller_waits_{false};  // the caller sleeps on done_ (its spin ran out)
  bool open_ = false;            // guarded by mu_: the current job may still be joined
  bool stop_ = false;
  std::vector<std::thread> workers_;
};

// Spin-then-yield wait helper for short waits between cooperating threads.
inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// A reusable barrier for a fixed group of threads that meet many times in a
// row (once per step): spins, then yields; never sleeps, since the other
// threads are a few microseconds away. It also adds up the time spent in
// long waits, which tells a core held by another process (long waits at
// many steps) from a passing interruption.
class StepBarrier {
 public:
  explicit StepBarrier(int n) : n_(n) {}
  void wait() {
    const int gen = gen_.load(std::memory_order_acquire);
    if (count_.fetch_add(1, std::memory_order_acq_rel) == n_ - 1) {
      count_.store(0, std::memory_order_relaxed);
      gen_.fetch_add(1, std::memory_order_release);
      return;
    }
    // Waits are normally a few microseconds; one that passes kProbe spins is
    // timed from there (so the clock is never read on the fast path).
    std::chrono::steady_clock::time_point late{};
    // The count saturates at kSpins: a wait may outlast any int.
    for (int spin = 0; gen_.load(std::memory_order_acquire) == gen; spin = std::min(spin + 1, kSpins)) {
      if (spin == kProbe) late = std::chrono::steady_clock::now();
      if (spin < kSpins)
        cpu_relax();
      else
        std::this_thread::yield();
    }
    if (late != std::chrono::steady_clock::time_point{}) {
      const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - late);
      long_wait_ns_.fetch_add(static_cast<int64_t>(ns.count()), std::memory_order_relaxed);
    }
  }
  // Counts this thread in, like wait(), without waiting for the others.
  void arrive() {
    if (count_.fetch_add(1, std::memory_order_acq_rel) == n_ - 1) {
      count_.store(0, std::memory_order_relaxed);
      gen_.fetch_add(1, std::memory_order_release);
    }
  }
  // Total time threads spent in long waits (past kProbe spins, ~25 us).
  int64_t long_wait_ns() const { return long_wait_ns_.load(std::memory_order_relaxed); }

 private:
  static constexpr int kProbe = 1000;   // ~25 us of pause instructions on Zen 4/5
  static constexpr int kSpins = 20000;  // ~0.5 ms; then yield the core
  std::atomic<int64_t> long_wait_ns_{0};
  const int n_;
  std::atomic<int> count_{0};
  std::atomic<int> gen_{0};
};

}  // namespace rnninfer
