// The Python-facing Engine (rnninfer._core.Engine), shared by the binding
// files: bind_engine.cc (construction and predict), bind_stream.cc (streams)
// and bind_testing.cc (hooks for tests and benchmarks).
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <memory>
#include <string>
#include <vector>

#include "engine/engine.h"

namespace rnninfer {

using FloatArray = pybind11::array_t<float, pybind11::array::c_style | pybind11::array::forcecast>;
using IntArray = pybind11::array_t<int32_t, pybind11::array::c_style | pybind11::array::forcecast>;
using TokenArray = pybind11::array_t<int64_t, pybind11::array::c_style | pybind11::array::forcecast>;

// Scratch of one feed_many call (bind_stream.cc), kept by the engine for later
// calls so that a warmed-up call allocates nothing but its outputs.
struct FeedScratch;
struct FeedScratchDelete {
  void operator()(FeedScratch* s) const;
};
using FeedScratchPtr = std::unique_ptr<FeedScratch, FeedScratchDelete>;

// Owns the engine plus nothing from Python: weights are copied into packed
// buffers during construction, so the numpy arrays may be freed afterwards.
class PyEngine {
 public:
  PyEngine(const pybind11::dict& desc, const pybind11::dict& tensors, int threads,
           const std::string& isa);

  const Engine& engine() const { return *engine_; }

  // The plain-list fast path (None when x is not a list of ints) and the one
  // entry for the normalised forms of rnninfer/inputs.py (bind_engine.cc).
  pybind11::object predict_list(const pybind11::list& seq) const;
  pybind11::array_t<float> predict(const pybind11::array& x, const pybind11::object& lengths) const;

  // A float32 output array for B sequences of a padded width T (single: one
  // sequence, without the batch axis).
  pybind11::array_t<float> alloc_out(int B, int T, bool single = false) const;
  static void check_lengths(const IntArray& lengths, int batch);

  // feed_many's spare scratch (bind_stream.cc). Only touched with the GIL
  // held, which is all the locking it needs; a call takes one out while it
  // runs, so concurrent calls each have their own.
  std::vector<FeedScratchPtr>& feed_scratch() const { return feed_scratch_; }

 private:
  std::unique_ptr<Engine> engine_;
  mutable std::vector<FeedScratchPtr> feed_scratch_;
};

}  // namespace rnninfer
