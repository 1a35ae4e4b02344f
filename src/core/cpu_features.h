// Run-time x86 feature detection through CPUID + XGETBV (works the same with GCC and clang,
// unlike __builtin_cpu_supports, whose feature names differ between compilers and versions).
// Private to the library: kernels use it to pick a code path.
#pragma once

namespace diffuse::detail {

struct CpuFeatures {
  bool avx2 = false;  // AVX2 + FMA, with OS support for the YMM state
  bool f16c = false;
  bool avx512f = false;  // with OS support for the ZMM/opmask state
  bool avx512bw = false;
  bool avx512dq = false;
  bool avx512vl = false;
  bool avx512_bf16 = false;
};

// Detected once; thread-safe.
const CpuFeatures& cpu_features();

}  // namespace diffuse::detail
