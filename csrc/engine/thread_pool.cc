#include "engine/thread_pool.h"

#include <chrono>

namespace rnninfer {
namespace {
using Clock = std::chrono::steady_clock;
// Spins are timed, not counted: PAUSE costs from a few to ~140 cycles
// depending on the core. A worker spins this long after a job, to catch the
// next call of a busy service without a futex wake-up (which costs 50-250 us
// in a VM), then sleeps.
constexpr auto kWorkerSpin = std::chrono::microseconds(200);
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
}  // namespace

ThreadPool::ThreadPool(int threads) {
  for (int i = 1; i < threads; ++i) workers_.emplace_back([this, i] { worker_main(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  wake_.notify_all();
  for (std::thread& t : workers_) t.join();
}

void ThreadPool::run(const std::function<void(int)>& fn) {
  if (workers_.empty()) {
    fn(0);
    return;
  }
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
  }
  if (!spin_until([this] { return active_.load(std::memory_order_acquire) == 0; }, kCallerSpin)) {
    std::unique_lock<std::mutex> lock(mu_);
    done_.wait(lock, [this] { return active_.load(std::memory_order_acquire) == 0; });
  }
  std::lock_guard<std::mutex> lock(mu_);
  job_ = nullptr;
}

void ThreadPool::worker_main(int index) {
  uint64_t seen = 0;
  for (;;) {
    spin_until([&] { return generation_.load(std::memory_order_acquire) != seen; }, kWorkerSpin);
    const std::function<void(int)>* job = nullptr;
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
    (*job)(index);
    if (active_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      std::lock_guard<std::mutex> lock(mu_);
      done_.notify_all();
    }
  }
}

}  // namespace rnninfer
