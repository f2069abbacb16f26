// 64-byte aligned float buffers: packed weights (aligned loads, no split
// cache lines) and per-call scratch.
#pragma once

#include <cstddef>
#include <cstring>
#include <memory>
#include <new>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace rnninfer {

constexpr std::size_t kAlign = 64;

// Buffers of at least this many bytes start on a 2 MiB boundary and ask for
// transparent huge pages: a token table (10 MB for a 10k vocabulary of an
// LSTM(64)) is read one random row per token, and with 4 KiB pages most of
// those reads also miss the TLB.
constexpr std::size_t kHugeBytes = std::size_t{4} << 20;
constexpr std::size_t kHugeAlign = std::size_t{2} << 20;

inline std::size_t align_for(std::size_t bytes) { return bytes >= kHugeBytes ? kHugeAlign : kAlign; }

struct AlignedDelete {
  std::size_t align = kAlign;
  void operator()(float* p) const { ::operator delete[](p, std::align_val_t(align)); }
};

inline float* aligned_floats(std::size_t n) {
  const std::size_t bytes = n * sizeof(float);
  const std::size_t align = align_for(bytes);
  void* p = ::operator new[](bytes, std::align_val_t(align));
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  // A hint: where THP is off or "never", nothing changes.
  if (align == kHugeAlign) (void)madvise(p, bytes & ~(kHugeAlign - 1), MADV_HUGEPAGE);
#endif
  return static_cast<float*>(p);
}

class AlignedBuffer {
 public:
  AlignedBuffer() = default;
  explicit AlignedBuffer(std::size_t n) : size_(n) {
    if (n > 0) {
      ptr_ = std::unique_ptr<float[], AlignedDelete>(aligned_floats(n), AlignedDelete{align_for(n * sizeof(float))});
      std::memset(ptr_.get(), 0, n * sizeof(float));
    }
  }
  // Grow-only resize for per-call scratch kept across calls: contents are
  // not preserved or zeroed (every user writes before it reads).
  void ensure(std::size_t n) {
    if (n <= size_) return;
    ptr_ = std::unique_ptr<float[], AlignedDelete>(aligned_floats(n), AlignedDelete{align_for(n * sizeof(float))});
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
