// Scalar reference conversions between every pair of dtypes, with PyTorch's cast semantics:
// half types are produced from a float32 value (c10::Half(float), c10::BFloat16(float)),
// floating -> integer truncates toward zero (saturating instead of PyTorch's undefined
// behaviour for out-of-range values; NaN becomes 0), anything -> bool is `!= 0`.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "src/core/convert_kernels.h"

namespace diffuse::detail {

float f8_e4m3_to_float(uint8_t v) {
  const bool neg = (v & 0x80u) != 0;
  const int e = (v >> 3) & 0xf;
  const int m = v & 0x7;
  float out;
  if (e == 0xf && m == 0x7) {
    out = std::numeric_limits<float>::quiet_NaN();
  } else if (e == 0) {
    out = std::ldexp(static_cast<float>(m), -9);
  } else {
    out = std::ldexp(1.0f + static_cast<float>(m) / 8.0f, e - 7);
  }
  return neg ? -out : out;
}

float f8_e5m2_to_float(uint8_t v) {
  return f16_bits_to_float(static_cast<uint16_t>(v) << 8);
}

uint8_t float_to_f8_e4m3(float f) {
  const uint8_t sign = std::signbit(f) ? 0x80u : 0u;
  const float a = std::fabs(f);
  if (std::isnan(f) || a >= 480.0f) return static_cast<uint8_t>(sign | 0x7fu);
  if (a < 0.015625f) {  // below 2^-6: subnormal range, steps of 2^-9
    return static_cast<uint8_t>(sign | static_cast<uint8_t>(std::nearbyint(a * 512.0f)));
  }
  int e = 0;
  const float frac = std::frexp(a, &e);  // a = frac * 2^e, frac in [0.5, 1)
  int exp = e - 1;                       // a = (2 * frac) * 2^exp
  int q = static_cast<int>(std::nearbyint((2.0f * frac - 1.0f) * 8.0f));
  if (q == 8) {
    q = 0;
    ++exp;
  }
  const int biased = exp + 7;
  if (biased > 15 || (biased == 15 && q == 7)) return static_cast<uint8_t>(sign | 0x7eu);
  return static_cast<uint8_t>(sign | (biased << 3) | q);
}

uint8_t float_to_f8_e5m2(float f) {
  const uint16_t h = float_to_f16_bits(f);
  if ((h & 0x7fffu) > 0x7c00u) return static_cast<uint8_t>((h >> 8) | 0x02u);  // NaN stays NaN
  const uint32_t rounded = (static_cast<uint32_t>(h) + 0x7fu + ((h >> 8) & 1u)) >> 8;
  return static_cast<uint8_t>(rounded);
}

namespace {

// Element access through memcpy: buffers may be unaligned views into files (zip entries).
template <typename T>
T ld(const void* p, std::size_t i) {
  T v;
  std::memcpy(&v, static_cast<const char*>(p) + i * sizeof(T), sizeof(T));
  return v;
}
template <typename T>
void st(void* p, std::size_t i, T v) {
  std::memcpy(static_cast<char*>(p) + i * sizeof(T), &v, sizeof(T));
}

// Reads element i of a buffer as double (exact for every dtype but i64 beyond 2^53).
double load(const void* p, DType t, std::size_t i) {
  switch (t) {
    case DType::f32:
      return ld<float>(p, i);
    case DType::f16:
      return f16_bits_to_float(ld<uint16_t>(p, i));
    case DType::bf16:
      return bf16_bits_to_float(ld<uint16_t>(p, i));
    case DType::f64:
      return ld<double>(p, i);
    case DType::i64:
      return static_cast<double>(ld<int64_t>(p, i));
    case DType::i32:
      return ld<int32_t>(p, i);
    case DType::i16:
      return ld<int16_t>(p, i);
    case DType::i8:
      return ld<int8_t>(p, i);
    case DType::u8:
      return ld<uint8_t>(p, i);
    case DType::boolean:
      return ld<uint8_t>(p, i) != 0 ? 1.0 : 0.0;
    case DType::f8_e4m3:
      return f8_e4m3_to_float(ld<uint8_t>(p, i));
    case DType::f8_e5m2:
      return f8_e5m2_to_float(ld<uint8_t>(p, i));
  }
  return 0.0;
}

template <typename I>
I saturate(double v) {
  if (std::isnan(v)) return 0;
  const double t = std::trunc(v);
  if (t <= static_cast<double>(std::numeric_limits<I>::min())) return std::numeric_limits<I>::min();
  if (t >= static_cast<double>(std::numeric_limits<I>::max())) return std::numeric_limits<I>::max();
  return static_cast<I>(t);
}

void store(void* p, DType t, std::size_t i, double v) {
  switch (t) {
    case DType::f32:
      st<float>(p, i, static_cast<float>(static_cast<float>(v)));
      break;
    case DType::f16:
      st<uint16_t>(p, i, static_cast<uint16_t>(float_to_f16_bits(static_cast<float>(v))));
      break;
    case DType::bf16:
      st<uint16_t>(p, i, static_cast<uint16_t>(float_to_bf16_bits(static_cast<float>(v))));
      break;
    case DType::f64:
      st<double>(p, i, static_cast<double>(v));
      break;
    case DType::i64:
      st<int64_t>(p, i, static_cast<int64_t>(saturate<int64_t>(v)));
      break;
    case DType::i32:
      st<int32_t>(p, i, static_cast<int32_t>(saturate<int32_t>(v)));
      break;
    case DType::i16:
      st<int16_t>(p, i, static_cast<int16_t>(saturate<int16_t>(v)));
      break;
    case DType::i8:
      st<int8_t>(p, i, static_cast<int8_t>(saturate<int8_t>(v)));
      break;
    case DType::u8:
      st<uint8_t>(p, i, static_cast<uint8_t>(saturate<uint8_t>(v)));
      break;
    case DType::boolean:
      st<uint8_t>(p, i, static_cast<uint8_t>(v != 0.0 ? 1 : 0));
      break;
    case DType::f8_e4m3:
      st<uint8_t>(p, i, static_cast<uint8_t>(float_to_f8_e4m3(static_cast<float>(v))));
      break;
    case DType::f8_e5m2:
      st<uint8_t>(p, i, static_cast<uint8_t>(float_to_f8_e5m2(static_cast<float>(v))));
      break;
  }
}

}  // namespace

void convert_buffer_scalar(const void* src, DType src_dtype, void* dst, DType dst_dtype,
                           std::size_t n) {
  // i64 -> i64-sized integer paths would lose precision through double; integers between
  // integer types go through int64 directly.
  const bool src_int = !is_floating(src_dtype);
  const bool dst_int = !is_floating(dst_dtype) && dst_dtype != DType::boolean;
  if (src_int && dst_int && src_dtype == DType::i64) {
    for (std::size_t i = 0; i < n; ++i) {
      const int64_t v = ld<int64_t>(src, i);
      switch (dst_dtype) {
        case DType::i32:
          st<int32_t>(dst, i, static_cast<int32_t>(static_cast<int32_t>(v)));
          break;
        case DType::i16:
          st<int16_t>(dst, i, static_cast<int16_t>(static_cast<int16_t>(v)));
          break;
        case DType::i8:
          st<int8_t>(dst, i, static_cast<int8_t>(static_cast<int8_t>(v)));
          break;
        case DType::u8:
          st<uint8_t>(dst, i, static_cast<uint8_t>(static_cast<uint8_t>(v)));
          break;
        default:
          st<int64_t>(dst, i, static_cast<int64_t>(v));
          break;
      }
    }
    return;
  }
  for (std::size_t i = 0; i < n; ++i) store(dst, dst_dtype, i, load(src, src_dtype, i));
}

}  // namespace diffuse::detail
