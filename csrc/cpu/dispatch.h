// Choosing the kernel table. The default follows the CPU (best ISA it can
// run); RNNINFER_ISA=scalar|avx2|avx512|avx512_bf16 forces one and is refused if the CPU
// cannot run it. Tests ask for a specific table with kernels_for().
#pragma once

#include <string>
#include <vector>

#include "kernels/kernels.h"

namespace rnninfer {

// ISAs compiled into this build and runnable on this CPU, best last.
std::vector<std::string> available_isas();

// The table for a named ISA; throws std::invalid_argument naming the ISA if
// it is unknown, not compiled in, or not supported by this CPU.
const KernelTable& kernels_for(const std::string& isa);

// The process default: RNNINFER_ISA if set (validated), else the best
// available. Chosen once, on first use.
const KernelTable& default_kernels();

}  // namespace rnninfer
