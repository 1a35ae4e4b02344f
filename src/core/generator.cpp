// PyTorch's CPU random number generation, reproduced bit for bit. Sources mirrored (PyTorch
// 1.13, the version that produced shared/reference/*/randn):
//   ATen/CPUGeneratorImpl.cpp            engine, random(), random64(), normal cache
//   ATen/core/DistributionsHelper.h      uniform_real_distribution, normal_distribution
//   ATen/core/TransformationHelper.h     uniform_real (mask to the mantissa digits, scale)
//   ATen/native/cpu/DistributionTemplates.h   normal_kernel, normal_fill(_AVX2), uniform_kernel
//   ATen/native/cpu/avx_mathfun.h        log256_ps, sincos256_ps (cephes polynomials)
#include "diffuse/core/generator.h"

#include <bit>
#include <cmath>
#include <cstring>
#include <numbers>

#include "diffuse/core/error.h"

namespace diffuse {
namespace {

// --- Uniforms (at::transformation::uniform_real) ----------------------------------------------
// The random word is masked to the type's mantissa digits and scaled by 2^-digits: exact values
// k * 2^-digits in [0, 1). float/half/bfloat16 take one 32-bit word, double a 64-bit one.

float uniform_from_word(uint32_t word, int digits) {
  const uint32_t mask = (uint32_t{1} << digits) - 1;
  return static_cast<float>(word & mask) * std::ldexp(1.0f, -digits);
}

double uniform_double_from_word(uint64_t word) {
  constexpr uint64_t kMask = (uint64_t{1} << 53) - 1;
  return static_cast<double>(word & kMask) * 0x1.0p-53;
}

// --- avx_mathfun.h, one lane at a time --------------------------------------------------------
// PyTorch's AVX2 build of normal_fill runs log256_ps / sincos256_ps (Julien Pommier's
// cephes-based SSE/AVX functions). The vector code is compiled by GCC with -mfma and its default
// -ffp-contract=fast, so every multiply whose only use is an add is fused into an FMA. The lanes
// are independent, so evaluating them one at a time in float with explicit fmaf reproduces the
// vector results exactly on any x86-64 CPU. (This file is compiled with -ffp-contract=off so
// that the compiler adds no fusions of its own.)

constexpr float kSqrtHalf = 0.707106781186547524f;
constexpr float kLogP[9] = {7.0376836292E-2f,  -1.1514610310E-1f, 1.1676998740E-1f,
                            -1.2420140846E-1f, +1.4249322787E-1f, -1.6668057665E-1f,
                            +2.0000714765E-1f, -2.4999993993E-1f, +3.3333331174E-1f};
constexpr float kLogQ1 = -2.12194440e-4f;
constexpr float kLogQ2 = 0.693359375f;

constexpr float kMinusDP1 = -0.78515625f;
constexpr float kMinusDP2 = -2.4187564849853515625e-4f;
constexpr float kMinusDP3 = -3.77489497744594108e-8f;
constexpr float kSinP0 = -1.9515295891E-4f;
constexpr float kSinP1 = 8.3321608736E-3f;
constexpr float kSinP2 = -1.6666654611E-1f;
constexpr float kCosP0 = 2.443315711809948E-005f;
constexpr float kCosP1 = -1.388731625493765E-003f;
constexpr float kCosP2 = 4.166664568298827E-002f;
constexpr float kFourOverPi = 1.27323954473516f;

inline uint32_t bits_of(float f) {
  return std::bit_cast<uint32_t>(f);
}
inline float float_of(uint32_t u) {
  return std::bit_cast<float>(u);
}

// log256_ps for one lane (x > 0; PyTorch only passes 1 - u with u in [0, 1)).
float avx_log(float x) {
  constexpr uint32_t kMinNormPos = 0x00800000u;
  if (!(x > float_of(kMinNormPos))) x = float_of(kMinNormPos);  // _mm256_max_ps(x, min_norm)
  const int32_t exponent = static_cast<int32_t>(bits_of(x) >> 23) - 0x7f;
  x = float_of((bits_of(x) & ~0x7f800000u) | bits_of(0.5f));
  float e = static_cast<float>(exponent) + 1.0f;
  const bool below = x < kSqrtHalf;
  const float tmp = below ? x : 0.0f;
  x = x - 1.0f;
  e = e - (below ? 1.0f : 0.0f);
  x = x + tmp;
  const float z = x * x;
  float y = kLogP[0];
  for (int k = 1; k < 9; ++k) y = std::fmaf(y, x, kLogP[k]);
  y = y * x;
  y = std::fmaf(y, z, e * kLogQ1);
  y = std::fmaf(-z, 0.5f, y);
  x = x + y;
  x = std::fmaf(e, kLogQ2, x);
  return x;
}

// sincos256_ps for one lane.
void avx_sincos(float x, float* sin_out, float* cos_out) {
  uint32_t sign_sin = bits_of(x) & 0x80000000u;
  x = float_of(bits_of(x) & 0x7fffffffu);
  float y = x * kFourOverPi;
  int32_t j = static_cast<int32_t>(y);  // cvttps: truncation
  j = (j + 1) & ~1;
  y = static_cast<float>(j);
  const uint32_t swap_sign_sin = static_cast<uint32_t>(j & 4) << 29;
  const bool poly_sin = (j & 2) == 0;  // the sine polynomial's mask for the sine output
  x = std::fmaf(y, kMinusDP1, x);
  x = std::fmaf(y, kMinusDP2, x);
  x = std::fmaf(y, kMinusDP3, x);
  const uint32_t sign_cos = static_cast<uint32_t>(~(j - 2) & 4) << 29;
  sign_sin ^= swap_sign_sin;

  const float z = x * x;
  float yc = std::fmaf(kCosP0, z, kCosP1);
  yc = std::fmaf(yc, z, kCosP2);
  yc = yc * z;
  yc = std::fmaf(yc, z, -(z * 0.5f));
  yc = yc + 1.0f;

  float ys = std::fmaf(kSinP0, z, kSinP1);
  ys = std::fmaf(ys, z, kSinP2);
  ys = ys * z;
  ys = std::fmaf(ys, x, x);

  // Select with bit masks exactly as the vector code does (the masked-out value is +0.0f).
  const float ysin2 = poly_sin ? ys : 0.0f;
  const float ysin1 = poly_sin ? 0.0f : yc;
  const float ys_rest = ys - ysin2;
  const float yc_rest = yc - ysin1;
  *sin_out = float_of(bits_of(ysin1 + ysin2) ^ sign_sin);
  *cos_out = float_of(bits_of(yc_rest + ys_rest) ^ sign_cos);
}

// normal_fill_16_AVX2 (mean 0, std 1): data[0..8) and data[8..16) hold uniforms in [0, 1).
void normal_fill_16_avx2(float* data) {
  const float two_pi = static_cast<float>(2.0f * std::numbers::pi);
  for (int j = 0; j < 8; ++j) {
    const float u1 = 1.0f - data[j];
    const float u2 = data[j + 8];
    const float radius = std::sqrt(-2.0f * avx_log(u1));
    const float theta = two_pi * u2;
    float s = 0.0f, c = 0.0f;
    avx_sincos(theta, &s, &c);
    // _mm256_fmadd_ps(n, std = 1, mean = 0): exact, but turns -0 into +0.
    data[j] = std::fmaf(radius * c, 1.0f, 0.0f);
    data[j + 8] = std::fmaf(radius * s, 1.0f, 0.0f);
  }
}

// normal_fill_16<double> (mean 0, std 1).
void normal_fill_16_double(double* data) {
  for (int j = 0; j < 8; ++j) {
    const double u1 = 1.0 - data[j];
    const double u2 = data[j + 8];
    const double radius = std::sqrt(-2.0 * std::log(u1));
    const double theta = 2.0 * std::numbers::pi * u2;
    data[j] = radius * std::cos(theta) * 1.0 + 0.0;
    data[j + 8] = radius * std::sin(theta) * 1.0 + 0.0;
  }
}

// normal_fill_16<c10::Half> / <c10::BFloat16> (mean 0, std 1) as PyTorch 1.13 compiles it. Values
// are floats exactly representable in the half type; `round` is the float -> half -> float round
// trip that every Half/BFloat16-typed result goes through:
// - both: `1 - data[j]` (int - half) and every assignment to a half variable round; `2.0f *
//   pi<double> * u2` is a double, which reaches the half type through float;
// - BFloat16 only: c10/util/BFloat16-math.h overloads std::log/sqrt/cos/sin for BFloat16 (and
//   BFloat16 * BFloat16 yields BFloat16), so those results round too. c10::Half has no such
//   overloads in 1.13: its math runs in float and only the final store rounds.
// (No reference data covers these dtypes; this follows the source.)
template <typename Round>
void normal_fill_16_half(float* data, Round round, bool half_math_rounds) {
  const auto r = [&](float v) { return half_math_rounds ? round(v) : v; };
  for (int j = 0; j < 8; ++j) {
    const float u1 = round(1.0f - data[j]);
    const float u2 = data[j + 8];
    const float radius = round(std::sqrt(r(-2.0f * r(std::log(u1)))));
    const float theta = round(static_cast<float>(2.0 * std::numbers::pi * static_cast<double>(u2)));
    // radius * cos(theta) * std + mean, with std = 1 and mean = 0.
    data[j] = round(r(r(r(radius * r(std::cos(theta))) * 1.0f) + 0.0f));
    data[j + 8] = round(r(r(r(radius * r(std::sin(theta))) * 1.0f) + 0.0f));
  }
}

float round_f16(float v) {
  return f16_bits_to_float(float_to_f16_bits(v));
}
float round_bf16(float v) {
  return bf16_bits_to_float(float_to_bf16_bits(v));
}

int mantissa_digits(DType dtype) {
  switch (dtype) {
    case DType::f16:
      return 11;
    case DType::bf16:
      return 8;
    default:
      return 24;
  }
}

void check_random_dtype(const char* op, DType dtype) {
  DIFFUSE_CHECK(
      dtype == DType::f32 || dtype == DType::f64 || dtype == DType::f16 || dtype == DType::bf16,
      "Generator::", op, ": dtype ", dtype_name(dtype),
      " is not supported; expected f32, f64, f16 or bf16");
}

}  // namespace

Generator::Generator(uint64_t seed) {
  manual_seed(seed);
}

void Generator::manual_seed(uint64_t seed) {
  seed_ = seed;
  // at::mt19937::init_with_uint32 keeps only the low 32 bits of the seed.
  engine_.seed(static_cast<std::mt19937::result_type>(seed & 0xffffffffu));
  next_double_normal_.reset();
}

uint32_t Generator::random() {
  return static_cast<uint32_t>(engine_());
}

uint64_t Generator::random64() {
  const uint64_t hi = random();
  const uint64_t lo = random();
  return (hi << 32) | lo;
}

double Generator::scalar_normal() {
  if (next_double_normal_.has_value()) {
    const double cached = *next_double_normal_;
    next_double_normal_.reset();
    return cached * 1.0 + 0.0;  // transformation::normal(ret, mean, std)
  }
  const double u1 = uniform_double_from_word(random64());
  const double u2 = uniform_double_from_word(random64());
  // PyTorch 1.13 writes log(1 - u2) (later versions log1p(-u2)); 1 - u2 is exact for these u2.
  const double r = std::sqrt(-2.0 * std::log(1.0 - u2));
  const double theta = 2.0 * std::numbers::pi * u1;
  next_double_normal_ = r * std::sin(theta);
  return r * std::cos(theta) * 1.0 + 0.0;
}

Tensor Generator::randn(const Shape& shape, DType dtype) {
  check_random_dtype("randn", dtype);
  Tensor out = Tensor::empty(shape, dtype);
  const int64_t n = out.numel();
  if (n == 0) return out;

  if (n < 16) {
    // Scalar path: at::normal_distribution<double> per element, cast to the dtype.
    std::vector<double> values(static_cast<std::size_t>(n));
    for (double& v : values) v = scalar_normal();
    if (dtype == DType::f16 || dtype == DType::bf16) {
      // static_cast<Half>(double) converts through float.
      std::vector<float> narrowed(values.begin(), values.end());
      convert(narrowed.data(), DType::f32, out.data_ptr(), dtype, narrowed.size());
    } else {
      convert(values.data(), DType::f64, out.data_ptr(), dtype, values.size());
    }
    return out;
  }

  // Vectorized path: all uniforms first, Box-Muller in blocks of 16; when n is not a multiple of
  // 16, 16 fresh uniforms overwrite the last 16 elements, which are transformed again.
  const auto fill = [&](auto* data, auto draw_uniform, auto transform16) {
    for (int64_t i = 0; i < n; ++i) data[i] = draw_uniform();
    for (int64_t i = 0; i + 16 <= n; i += 16) transform16(data + i);
    if (n % 16 != 0) {
      auto* tail = data + n - 16;
      for (int i = 0; i < 16; ++i) tail[i] = draw_uniform();
      transform16(tail);
    }
  };
  switch (dtype) {
    case DType::f64:
      fill(
          out.data<double>(), [&] { return uniform_double_from_word(random64()); },
          normal_fill_16_double);
      break;
    case DType::f32:
      fill(
          out.data<float>(), [&] { return uniform_from_word(random(), 24); }, normal_fill_16_avx2);
      break;
    default: {
      const int digits = mantissa_digits(dtype);
      std::vector<float> values(static_cast<std::size_t>(n));
      const auto draw = [&] { return uniform_from_word(random(), digits); };
      if (dtype == DType::f16) {
        fill(values.data(), draw, [](float* d) { normal_fill_16_half(d, round_f16, false); });
      } else {
        fill(values.data(), draw, [](float* d) { normal_fill_16_half(d, round_bf16, true); });
      }
      convert(values.data(), DType::f32, out.data_ptr(), dtype, values.size());
      break;
    }
  }
  return out;
}

Tensor Generator::rand(const Shape& shape, DType dtype) {
  check_random_dtype("rand", dtype);
  Tensor out = Tensor::empty(shape, dtype);
  const int64_t n = out.numel();
  if (dtype == DType::f64) {
    double* data = out.data<double>();
    for (int64_t i = 0; i < n; ++i) data[i] = uniform_double_from_word(random64());
    return out;
  }
  const int digits = mantissa_digits(dtype);
  std::vector<float> values(static_cast<std::size_t>(n));
  for (float& v : values) v = uniform_from_word(random(), digits);
  // Every value is exactly representable in the target dtype.
  convert(values.data(), DType::f32, out.data_ptr(), dtype, values.size());
  return out;
}

Tensor randn_tensor(const Shape& shape, std::span<Generator> generators, DType dtype) {
  DIFFUSE_CHECK(!generators.empty(), "randn_tensor: expected at least one generator");
  if (generators.size() == 1) return generators[0].randn(shape, dtype);
  DIFFUSE_CHECK(!shape.empty(), "randn_tensor: ", generators.size(),
                " generators need a batch dimension, got the scalar shape []");
  DIFFUSE_CHECK(static_cast<int64_t>(generators.size()) == shape[0],
                "randn_tensor: ", generators.size(), " generators were given for a batch of ",
                shape[0], " (shape ", shape_str(shape), "); pass one generator per batch item");
  Tensor out = Tensor::empty(shape, dtype);
  Shape item_shape = shape;
  item_shape[0] = 1;
  for (std::size_t b = 0; b < generators.size(); ++b) {
    out.narrow(0, static_cast<int64_t>(b), 1).copy_(generators[b].randn(item_shape, dtype));
  }
  return out;
}

}  // namespace diffuse
