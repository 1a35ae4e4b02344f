#include "src/backends/cpu/cpu_info.h"

namespace diffuse::cpu {

const CpuInfo& cpu_info() {
  static const CpuInfo info = [] {
    CpuInfo i;
    __builtin_cpu_init();
    i.avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    i.f16c = __builtin_cpu_supports("f16c");
    i.avx512f = __builtin_cpu_supports("avx512f");
    i.avx512bw = __builtin_cpu_supports("avx512bw");
    i.avx512_bf16 = __builtin_cpu_supports("avx512bf16");
    return i;
  }();
  return info;
}

}  // namespace diffuse::cpu
