#include "src/backends/cpu/cpu_info.h"

#include "src/core/cpu_features.h"

namespace diffuse::cpu {

const CpuInfo& cpu_info() {
  static const CpuInfo info = [] {
    const auto& f = detail::cpu_features();
    CpuInfo i;
    i.avx2 = f.avx2;
    i.f16c = f.f16c;
    i.avx512f = f.avx512f;
    i.avx512bw = f.avx512bw && f.avx512dq && f.avx512vl;
    i.avx512_bf16 = f.avx512_bf16 && i.avx512bw;
    return i;
  }();
  return info;
}

}  // namespace diffuse::cpu
