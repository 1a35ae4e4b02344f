#include "diffuse/core/dtype.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <string>

#include "diffuse/core/error.h"
#include "src/core/convert_kernels.h"

namespace diffuse {
namespace {

// The dtype table, in enumerator order.
constexpr DTypeInfo kDTypes[kNumDTypes] = {
    {DType::f32, "f32", "F32", 4, true},
    {DType::f16, "f16", "F16", 2, true},
    {DType::bf16, "bf16", "BF16", 2, true},
    {DType::f64, "f64", "F64", 8, true},
    {DType::i64, "i64", "I64", 8, false},
    {DType::i32, "i32", "I32", 4, false},
    {DType::i16, "i16", "I16", 2, false},
    {DType::i8, "i8", "I8", 1, false},
    {DType::u8, "u8", "U8", 1, false},
    {DType::boolean, "bool", "BOOL", 1, false},
    {DType::f8_e4m3, "f8_e4m3", "F8_E4M3", 1, true},
    {DType::f8_e5m2, "f8_e5m2", "F8_E5M2", 1, true},
};

}  // namespace

const DTypeInfo& dtype_info(DType dtype) {
  const auto i = static_cast<std::size_t>(dtype);
  DIFFUSE_ASSERT(i < static_cast<std::size_t>(kNumDTypes) && kDTypes[i].dtype == dtype);
  return kDTypes[i];
}

DType parse_dtype(std::string_view name) {
  std::string s(name);
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (s == "f32" || s == "float32" || s == "fp32" || s == "float") return DType::f32;
  if (s == "f16" || s == "float16" || s == "fp16" || s == "half") return DType::f16;
  if (s == "bf16" || s == "bfloat16") return DType::bf16;
  if (s == "f64" || s == "float64" || s == "fp64" || s == "double") return DType::f64;
  if (s == "i64" || s == "int64" || s == "long") return DType::i64;
  if (s == "i32" || s == "int32" || s == "int") return DType::i32;
  if (s == "i16" || s == "int16") return DType::i16;
  if (s == "i8" || s == "int8") return DType::i8;
  if (s == "u8" || s == "uint8") return DType::u8;
  if (s == "bool" || s == "boolean") return DType::boolean;
  if (s == "f8_e4m3" || s == "float8_e4m3fn" || s == "f8_e4m3fn") return DType::f8_e4m3;
  if (s == "f8_e5m2" || s == "float8_e5m2") return DType::f8_e5m2;
  DIFFUSE_FAIL("unknown dtype '", name,
               "': expected one of f32, f16, bf16, f64, i64, i32, i16, i8, u8, bool, f8_e4m3, "
               "f8_e5m2");
}

uint16_t float_to_f16_bits(float value) {
  uint32_t x;
  std::memcpy(&x, &value, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t abs = x & 0x7fffffffu;
  if (abs > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u | ((abs >> 13) & 0x3ffu));
  if (abs >= 0x47800000u) return static_cast<uint16_t>(sign | 0x7c00u);  // overflow -> inf
  if (abs < 0x38800000u) {
    // Result is subnormal (or zero): scale into the integer range and round to nearest even.
    float a;
    std::memcpy(&a, &abs, 4);
    const float scaled = a * 16777216.0f;  // 2^24: one f16 subnormal ulp becomes 1.0
    return static_cast<uint16_t>(sign | static_cast<uint32_t>(std::nearbyint(scaled)));
  }
  // Normal: rebias the exponent, round the 13 dropped mantissa bits to nearest even.
  uint32_t h = abs - 0x38000000u;
  h = (h + 0x0fffu + ((h >> 13) & 1u)) >> 13;
  return static_cast<uint16_t>(sign | h);
}

float f16_bits_to_float(uint16_t value) {
  const uint32_t sign = static_cast<uint32_t>(value & 0x8000u) << 16;
  const uint32_t exp = (value >> 10) & 0x1fu;
  const uint32_t mant = value & 0x3ffu;
  uint32_t bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else if (exp == 0) {
    const float f = static_cast<float>(mant) * (1.0f / 16777216.0f);  // mant * 2^-24
    std::memcpy(&bits, &f, 4);
    bits |= sign;
  } else {
    bits = sign | ((exp + 112u) << 23) | (mant << 13);
  }
  float out;
  std::memcpy(&out, &bits, 4);
  return out;
}

void convert(const void* src, DType src_dtype, void* dst, DType dst_dtype, std::size_t n) {
  if (n == 0) return;
  if (src_dtype == dst_dtype) {
    std::memcpy(dst, src, n * dtype_size(src_dtype));
    return;
  }
  detail::convert_buffer(src, src_dtype, dst, dst_dtype, n);
}

}  // namespace diffuse
