// Compiles simd_kernels.inc once per instruction set and picks one at run time. The build targets
// the x86-64 baseline; the AVX2 and AVX-512 instances are compiled through `#pragma GCC target`
// and only called after cpu_info() confirmed the instructions.
#include <atomic>
#include <cstdint>

#include "src/backends/cpu/cpu_info.h"
#include "src/backends/cpu/kernels.h"

// Captureless lambdas in the kernels get a function-pointer thunk that GCC compiles without the
// region's target and warns about its vector ABI; the thunk is never called (the lambdas are
// always inlined), so the warning is silenced for this file.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace diffuse::cpu {

#define DIFFUSE_SIMD_TABLE(isa_name_str)                                          \
  const SimdKernels kTable = {isa_name_str, unary,      binary,        sum_sumsq, \
                              sum_sq_dev,   affine_act, normalize_row, softmax_row};

namespace baseline {
#define DIFFUSE_SIMD_WIDTH 4
#define DIFFUSE_SIMD_SQRT __builtin_ia32_sqrtps
#include "src/backends/cpu/simd_kernels.inc"
DIFFUSE_SIMD_TABLE("baseline")
#undef DIFFUSE_SIMD_WIDTH
#undef DIFFUSE_SIMD_SQRT
#undef DIFFUSE_INLINE
}  // namespace baseline

#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace avx2 {
#define DIFFUSE_SIMD_WIDTH 8
#define DIFFUSE_SIMD_SQRT __builtin_ia32_sqrtps256
#include "src/backends/cpu/simd_kernels.inc"
DIFFUSE_SIMD_TABLE("avx2")
#undef DIFFUSE_SIMD_WIDTH
#undef DIFFUSE_SIMD_SQRT
#undef DIFFUSE_INLINE
}  // namespace avx2
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx512f,fma")
namespace avx512 {
#define DIFFUSE_SIMD_WIDTH 16
// The _mm512_sqrt_ps wrapper trips GCC 12's -Wmaybe-uninitialized; call the builtin directly.
#define DIFFUSE_SIMD_SQRT(x) __builtin_ia32_sqrtps512_mask(x, x, static_cast<uint16_t>(-1), 4)
#include "src/backends/cpu/simd_kernels.inc"
DIFFUSE_SIMD_TABLE("avx512")
#undef DIFFUSE_SIMD_WIDTH
#undef DIFFUSE_SIMD_SQRT
#undef DIFFUSE_INLINE
}  // namespace avx512
#pragma GCC pop_options

namespace {

std::atomic<int>& active_level() {
  static std::atomic<int> level{static_cast<int>(best_isa())};
  return level;
}

}  // namespace

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::baseline:
      return "baseline";
    case Isa::avx2:
      return "avx2";
    case Isa::avx512:
      return "avx512";
  }
  return "?";
}

Isa best_isa() {
  const CpuInfo& info = cpu_info();
  if (info.avx512f && info.avx2) return Isa::avx512;
  if (info.avx2) return Isa::avx2;
  return Isa::baseline;
}

Isa active_isa() {
  return static_cast<Isa>(active_level().load(std::memory_order_relaxed));
}

void set_isa(Isa isa) {
  const int want = static_cast<int>(isa);
  const int best = static_cast<int>(best_isa());
  active_level().store(want < best ? want : best, std::memory_order_relaxed);
}

const SimdKernels& simd() {
  switch (active_isa()) {
    case Isa::avx512:
      return avx512::kTable;
    case Isa::avx2:
      return avx2::kTable;
    case Isa::baseline:
      break;
  }
  return baseline::kTable;
}

int activation_code(ops::Activation activation) {
  switch (activation) {
    case ops::Activation::none:
      return kActNone;
    case ops::Activation::silu:
      return kActSilu;
    case ops::Activation::gelu:
      return kActGelu;
    case ops::Activation::gelu_tanh:
      return kActGeluTanh;
    case ops::Activation::quick_gelu:
      return kActQuickGelu;
    case ops::Activation::relu:
      return kActRelu;
  }
  return kActNone;
}

}  // namespace diffuse::cpu
