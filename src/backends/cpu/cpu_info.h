// Run-time CPU feature detection for kernel dispatch.
#pragma once

namespace diffuse::cpu {

struct CpuInfo {
  bool avx2 = false;  // AVX2 + FMA
  bool f16c = false;
  bool avx512f = false;
  bool avx512bw = false;
  bool avx512_bf16 = false;
};

// Detected once, thread-safe.
const CpuInfo& cpu_info();

}  // namespace diffuse::cpu
