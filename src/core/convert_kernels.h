// Buffer conversion kernels behind diffuse::convert (private to src/core).
#pragma once

#include <cstddef>

#include "diffuse/core/dtype.h"

namespace diffuse::detail {

// Converts n elements between two different dtypes. Picks a vectorized kernel for the common
// float pairs when the CPU supports it, the scalar reference otherwise.
void convert_buffer(const void* src, DType src_dtype, void* dst, DType dst_dtype, std::size_t n);

// The scalar reference for every pair (the executable spec of the vectorized kernels).
void convert_buffer_scalar(const void* src, DType src_dtype, void* dst, DType dst_dtype,
                           std::size_t n);

// FP8 scalar conversions (OCP E4M3FN: no infinities, NaN = S.1111.111, max 448; E5M2: IEEE-like).
float f8_e4m3_to_float(uint8_t v);
float f8_e5m2_to_float(uint8_t v);
uint8_t float_to_f8_e4m3(float f);
uint8_t float_to_f8_e5m2(float f);

}  // namespace diffuse::detail
