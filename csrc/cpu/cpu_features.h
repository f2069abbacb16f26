// What the CPU (and the OS) can run, detected once.
#pragma once

#include <string>

namespace rnninfer {

struct CpuFeatures {
  bool avx2_fma = false;  // AVX2 + FMA3, YMM state enabled by the OS
  bool avx512 = false;    // AVX-512 F + VL + BW + DQ, ZMM state enabled by the OS
  bool avx512_bf16 = false;
  bool avx512_vnni = false;
  bool neon = false;
  std::string brand;
};

// Detected on first call (thread-safe function-local static), then constant.
const CpuFeatures& cpu_features();

}  // namespace rnninfer
