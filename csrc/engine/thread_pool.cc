#include "engine/thread_pool.h"

#include <algorithm>
#include <chrono>

#if defined(__linux__)
#include <pthread.h>
#include <sched.h>
#endif

namespace rnninfer {
namespace {
using Clock = std::chrono::steady_clock;
// Spins are timed, not counted: PAUSE costs from a few to ~140 cycles
// depending on the core. A worker spins this long after a job, to catch the
// next call of a busy service without a futex wake-up (which costs 50-250 us
// in a VM), then sleeps. 1 ms covers an HTTP round trip between a served
// client's calls: measured with `rnninfer serve` at concurrency 1 (headline
// model, 2 threads), p50 1.10-1.31 ms with 200 us against 1.02-1.06 ms with
// 1 ms, p99 1.5-2.1 ms against 1.2-1.3 ms. An idle pool still sleeps within
// 1 ms of its last call.
constexpr auto kWorkerSpin = std::chrono::microseconds(1000);
// The caller waits for the rest of its own call: the workers are running the
// same call, so spinning is the cheap way to wait; the bound only matters if
// the OS has descheduled a worker.
constexpr auto kCallerSpin = std::chrono::milliseconds(20);

template <typename Pred>
bool spin_until(Pred done, Clock::duration limit) {
  const Clock::time_point end = Clock::now() + limit;
  for (;;) {
    for (int i = 0; i < 64; ++i) {
      if (done()) return true;
      cpu_relax();
    }
    if (Clock::now() >= end) return done();
  }
}

int current_cpu() {
#if defined(__linux__)
  return sched_getcpu();
#else
  return -1;
#endif
}
}  // namespace

ThreadPool::ThreadPool(int threads) : cpu_of_(new std::atomic<int>[static_cast<size_t>(std::max(1, threads))]) {
  for (int i = 0; i < std::max(1, threads); ++i) cpu_of_[static_cast<size_t>(i)].store(-1, std::memory_order_relaxed);
#if defined(__linux__)
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0)
    for (int c = 0; c < CPU_SETSIZE; ++c)
      if (CPU_ISSET(c, &set)) process_cpus_.push_back(c);
#endif
  for (int i = 1; i < threads; ++i) workers_.emplace_back([this, i] { worker_main(i); });
}

bool ThreadPool::avoid_shared_cpu(int index) {
  const int cpu = current_cpu();
  cpu_of_[static_cast<size_t>(index)].store(cpu, std::memory_order_relaxed);
  if (cpu < 0) return false;
  bool shared = false;
  auto cpu_of = [this](int j) { return cpu_of_[static_cast<size_t>(j)].load(std::memory_order_relaxed); };
  for (int j = 0; j < index; ++j) shared = shared || cpu_of(j) == cpu;
  if (!shared) return false;
#if defined(__linux__)
  // The kernel often wakes a sleeping worker on the CPU of the thread that
  // woke it. The two threads of one call then take turns on one core (a
  // thread waiting at a step barrier spins before it yields) until the load
  // balancer separates them, which on an otherwise idle VM can take tens of
  // milliseconds. Measured, headline model at batch 1 called every 5 ms on 2
  // threads: p99 11-12 ms and max 17-20 ms with the threads left where the
  // kernel put them, p99 2.0-2.6 ms and max 2.9 ms with this move.
  cpu_set_t set;
  CPU_ZERO(&set);
  int n = 0;
  const int size = static_cast<int>(workers_.size()) + 1;
  for (int c : process_cpus_) {
    bool used = false;
    for (int j = 0; j < size && !used; ++j) used = j != index && cpu_of(j) == c;
    if (!used && c < CPU_SETSIZE) {
      CPU_SET(c, &set);
      ++n;
    }
  }
  return n > 0 && pthread_setaffinity_np(pthread_self(), sizeof(set), &set) == 0;
#else
  return false;
#endif
}

void ThreadPool::restore_cpus() {
#if defined(__linux__)
  cpu_set_t set;
  CPU_ZERO(&set);
  for (int c : process_cpus_)
    if (c < CPU_SETSIZE) CPU_SET(c, &set);
  (void)pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
#endif
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  wake_.notify_all();
  for (std::thread& t : workers_) t.join();
}

void ThreadPool::run(FunctionRef<void(int)> fn) {
  if (workers_.empty()) {
    fn(0);
    return;
  }
  cpu_of_[0].store(current_cpu(), std::memory_order_relaxed);
  for (size_t i = 1; i <= workers_.size(); ++i) cpu_of_[i].store(-1, std::memory_order_relaxed);
  {
    std::lock_guard<std::mutex> lock(mu_);
    job_ = &fn;
    open_ = true;
    generation_.fetch_add(1, std::memory_order_release);
  }
  wake_.notify_all();
  fn(0);
  // Close the job: a worker that has not picked it up by now (still waking,
  // or its core descheduled) skips it; wait only for the workers inside it.
  {
    std::lock_guard<std::mutex> lock(mu_);
    open_ = false;
    job_ = nullptr;  // a worker inside the job holds its own copy
  }
  if (!spin_until([this] { return active_.load(std::memory_order_acquire) == 0; }, kCallerSpin)) {
    // Sequentially consistent with the worker's decrement and check (below):
    // either the worker sees caller_waits_ and wakes this wait, or this
    // check sees active_ at zero and never sleeps.
    std::unique_lock<std::mutex> lock(mu_);
    caller_waits_.store(true, std::memory_order_seq_cst);
    done_.wait(lock, [this] { return active_.load(std::memory_order_seq_cst) == 0; });
    caller_waits_.store(false, std::memory_order_relaxed);
  }
}

void ThreadPool::worker_main(int index) {
  uint64_t seen = 0;
  for (;;) {
    spin_until([&] { return generation_.load(std::memory_order_acquire) != seen; }, kWorkerSpin);
    const FunctionRef<void(int)>* job = nullptr;
    {
      std::unique_lock<std::mutex> lock(mu_);
      wake_.wait(lock, [&] { return stop_ || generation_.load(std::memory_order_acquire) != seen; });
      if (stop_) return;
      seen = generation_.load(std::memory_order_acquire);
      if (open_) {
        job = job_;
        active_.fetch_add(1, std::memory_order_acq_rel);
      }
    }
    if (job == nullptr) continue;
    const bool moved = avoid_shared_cpu(index);
    (*job)(index);
    if (moved) restore_cpus();
    // The mutex only when the caller sleeps on done_: it is the line the
    // caller takes right after its own part, and a worker holding it then
    // could put the caller to sleep on the futex.
    if (active_.fetch_sub(1, std::memory_order_seq_cst) == 1 &&
        caller_waits_.load(std::memory_order_seq_cst)) {
      std::lock_guard<std::mutex> lock(mu_);
      done_.notify_all();
    }
  }
}

}  // namespace rnninfer
