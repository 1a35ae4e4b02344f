// Element types. The table of properties is written once, here.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace diffuse {

enum class DType : uint8_t {
  f32,
  f16,
  bf16,
  f64,
  i64,
  i32,
  i16,
  i8,
  u8,
  boolean,
  f8_e4m3,  // OCP FP8 E4M3 (torch.float8_e4m3fn)
  f8_e5m2,  // OCP FP8 E5M2 (torch.float8_e5m2)
};

inline constexpr int kNumDTypes = 12;

struct DTypeInfo {
  DType dtype;
  std::string_view name;              // "f32", "bf16", ...
  std::string_view safetensors_name;  // "F32", "BF16", ...
  std::size_t size;                   // bytes per element
  bool is_floating;
};

// Properties of `dtype` (never fails: every enumerator has an entry).
const DTypeInfo& dtype_info(DType dtype);

inline std::size_t dtype_size(DType dtype) {
  return dtype_info(dtype).size;
}
inline std::string_view dtype_name(DType dtype) {
  return dtype_info(dtype).name;
}
inline bool is_floating(DType dtype) {
  return dtype_info(dtype).is_floating;
}

// Parses "f32"/"float32"/"fp32"/"F32", "f16"/"float16"/"half", "bf16"/"bfloat16", ... Throws
// diffuse::Error naming the accepted spellings when `name` is unknown.
DType parse_dtype(std::string_view name);

// Maps C++ element types to DType.
template <typename T>
struct DTypeOf;
template <>
struct DTypeOf<float> {
  static constexpr DType value = DType::f32;
};
template <>
struct DTypeOf<double> {
  static constexpr DType value = DType::f64;
};
template <>
struct DTypeOf<int64_t> {
  static constexpr DType value = DType::i64;
};
template <>
struct DTypeOf<int32_t> {
  static constexpr DType value = DType::i32;
};
template <>
struct DTypeOf<int16_t> {
  static constexpr DType value = DType::i16;
};
template <>
struct DTypeOf<int8_t> {
  static constexpr DType value = DType::i8;
};
template <>
struct DTypeOf<uint8_t> {
  static constexpr DType value = DType::u8;
};
template <>
struct DTypeOf<bool> {
  static constexpr DType value = DType::boolean;
};

// --- Scalar half-precision conversions (bit-identical to PyTorch's casts) -------------------

// float -> bfloat16 bits with round-to-nearest-even; NaN stays a (quiet) NaN.
inline uint16_t float_to_bf16_bits(float value) {
  uint32_t bits;
  __builtin_memcpy(&bits, &value, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x0040u);
  const uint32_t rounding_bias = 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>((bits + rounding_bias) >> 16);
}

inline float bf16_bits_to_float(uint16_t value) {
  const uint32_t bits = static_cast<uint32_t>(value) << 16;
  float out;
  __builtin_memcpy(&out, &bits, 4);
  return out;
}

// IEEE binary16 conversions with round-to-nearest-even (what F16C's vcvtps2ph does).
uint16_t float_to_f16_bits(float value);
float f16_bits_to_float(uint16_t value);

// Converts `n` contiguous elements from `src` (type `src_dtype`) to `dst` (type `dst_dtype`).
// Floating -> integer truncates toward zero like PyTorch's casts; the buffers must not overlap.
// Vectorized (F16C, AVX-512 BF16) when the CPU has the instructions, scalar otherwise.
void convert(const void* src, DType src_dtype, void* dst, DType dst_dtype, std::size_t n);

}  // namespace diffuse
