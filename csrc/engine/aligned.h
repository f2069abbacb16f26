// 64-byte aligned float buffers: packed weights (aligned loads, no split
// cache lines) and per-call scratch.
#pragma once

#include <cstddef>
#include <cstring>
#include <memory>
#include <new>

namespace rnninfer {

constexpr std::size_t kAlign = 64;

struct AlignedDelete {
  void operator()(float* p) const { ::operator delete[](p, std::align_val_t(kAlign)); }
};

class AlignedBuffer {
 public:
  AlignedBuffer() = default;
  explicit AlignedBuffer(std::size_t n) : size_(n) {
    if (n > 0) {
      ptr_.reset(static_cast<float*>(::operator new[](n * sizeof(float), std::align_val_t(kAlign))));
      std::memset(ptr_.get(), 0, n * sizeof(float));
    }
  }
  // Grow-only resize for per-call scratch kept across calls: contents are
  // not preserved or zeroed (every user writes before it reads).
  void ensure(std::size_t n) {
    if (n <= size_) return;
    ptr_.reset(static_cast<float*>(::operator new[](n * sizeof(float), std::align_val_t(kAlign))));
    size_ = n;
  }
  float* data() { return ptr_.get(); }
  const float* data() const { return ptr_.get(); }
  std::size_t size() const { return size_; }

 private:
  std::unique_ptr<float[], AlignedDelete> ptr_;
  std::size_t size_ = 0;
};

}  // namespace rnninfer
