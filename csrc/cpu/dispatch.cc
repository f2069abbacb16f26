#include "cpu/dispatch.h"

#include <cstdlib>
#include <stdexcept>

#include "cpu/cpu_features.h"

namespace rnninfer {

std::vector<std::string> available_isas() {
  std::vector<std::string> out{"scalar"};
#if defined(RNNINFER_HAVE_AVX2)
  if (cpu_features().avx2_fma) out.emplace_back("avx2");
#endif
#if defined(RNNINFER_HAVE_AVX512)
  if (cpu_features().avx512) out.emplace_back("avx512");
#endif
#if defined(RNNINFER_HAVE_AVX512_BF16)
  if (cpu_features().avx512_bf16 && cpu_features().avx512_vnni) out.emplace_back("avx512_bf16");
#endif
  return out;
}

const KernelTable& kernels_for(const std::string& isa) {
  if (isa == "scalar") return kernels::scalar::table();
  if (isa == "avx2") {
#if defined(RNNINFER_HAVE_AVX2)
    if (!cpu_features().avx2_fma)
      throw std::invalid_argument("ISA 'avx2' requested but this CPU (or OS) lacks AVX2+FMA");
    return kernels::avx2::table();
#else
    throw std::invalid_argument("ISA 'avx2' is not compiled into this build");
#endif
  }
  if (isa == "avx512") {
#if defined(RNNINFER_HAVE_AVX512)
    if (!cpu_features().avx512)
      throw std::invalid_argument(
          "ISA 'avx512' requested but this CPU (or OS) lacks AVX-512 F/VL/BW/DQ");
    return kernels::avx512::table();
#else
    throw std::invalid_argument("ISA 'avx512' is not compiled into this build");
#endif
  }
  if (isa == "avx512_bf16") {
#if defined(RNNINFER_HAVE_AVX512_BF16)
    if (!cpu_features().avx512_bf16 || !cpu_features().avx512_vnni)
      throw std::invalid_argument(
          "ISA 'avx512_bf16' requested but this CPU (or OS) lacks AVX-512 F/VL/BW/DQ + BF16 + VNNI");
    return kernels::avx512_bf16::table();
#else
    throw std::invalid_argument("ISA 'avx512_bf16' is not compiled into this build");
#endif
  }
  throw std::invalid_argument("unknown ISA '" + isa +
                              "'; expected scalar, avx2, avx512 or avx512_bf16");
}

const KernelTable& default_kernels() {
  static const KernelTable& table = []() -> const KernelTable& {
    const char* env = std::getenv("RNNINFER_ISA");
    if (env != nullptr && *env != '\0') return kernels_for(env);
    return kernels_for(available_isas().back());
  }();
  return table;
}

}  // namespace rnninfer
