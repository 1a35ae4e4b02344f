// Buffer conversion kernels behind diffuse::convert (private to src/core).
#pragma once

#include <cstddef>
#include <cstdint>

#include "diffuse/core/dtype.h"

namespace diffuse::detail {

// Converts n elements between two different dtypes. Picks a vectorized kernel for the float
// pairs f32 <-> f16 and f32 <-> bf16 when the CPU supports it (AVX-512, else AVX2 + F16C), the
// scalar reference otherwise; buffers of at least kParallelConvertMin elements are split across
// OpenMP threads. Results are bit-identical to convert_buffer_scalar whichever path runs.
void convert_buffer(const void* src, DType src_dtype, void* dst, DType dst_dtype, std::size_t n);

// The scalar reference for every pair (the executable spec of the vectorized kernels).
void convert_buffer_scalar(const void* src, DType src_dtype, void* dst, DType dst_dtype,
                           std::size_t n);

// Instruction sets of the vectorized kernels, best last.
enum class ConvertIsa { scalar, avx2, avx512 };
// The best kernel set this CPU can run.
ConvertIsa best_convert_isa();
// Runs the kernel of `isa` for one pair on one thread (tests compare each ISA with the scalar
// reference). Returns false, converting nothing, when the CPU lacks `isa` or `isa` has no kernel
// for the pair. ConvertIsa::scalar always runs convert_buffer_scalar.
bool convert_buffer_isa(ConvertIsa isa, const void* src, DType src_dtype, void* dst,
                        DType dst_dtype, std::size_t n);

// Element count from which convert_buffer uses several threads.
inline constexpr std::size_t kParallelConvertMin = std::size_t{1} << 18;

// FP8 scalar conversions (OCP E4M3FN: no infinities, NaN = S.1111.111, max 448; E5M2: IEEE-like).
float f8_e4m3_to_float(uint8_t v);
float f8_e5m2_to_float(uint8_t v);
uint8_t float_to_f8_e4m3(float f);
uint8_t float_to_f8_e5m2(float f);

}  // namespace diffuse::detail
