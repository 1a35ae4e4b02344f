// Elementwise kernels: chunks of kChunk elements, gathered (any view, any float dtype) into f32
// buffers, computed by the active SIMD instance, converted into the contiguous output. f64 runs
// through double scalar code. OpenMP parallel over chunks.
#include <cmath>
#include <cstring>

#include "src/backends/cpu/kernels.h"
#include "src/backends/cpu/strided.h"

namespace diffuse::cpu {
namespace {

int64_t num_chunks(int64_t n) {
  return (n + kChunk - 1) / kChunk;
}

double sigmoid_d(double x) {
  return 1.0 / (1.0 + std::exp(-x));
}

double unary_f64(UnaryOp op, double x, double p0, double p1) {
  switch (op) {
    case UnaryOp::identity:
      return x;
    case UnaryOp::neg:
      return -x;
    case UnaryOp::abs:
      return std::fabs(x);
    case UnaryOp::exp:
      return std::exp(x);
    case UnaryOp::log:
      return std::log(x);
    case UnaryOp::sqrt:
      return std::sqrt(x);
    case UnaryOp::rsqrt:
      return 1.0 / std::sqrt(x);
    case UnaryOp::sin:
      return std::sin(x);
    case UnaryOp::cos:
      return std::cos(x);
    case UnaryOp::square:
      return x * x;
    case UnaryOp::pow:
      return std::pow(x, p0);
    case UnaryOp::add_scalar:
      return x + p0;
    case UnaryOp::sub_scalar:
      return x - p0;
    case UnaryOp::mul_scalar:
      return x * p0;
    case UnaryOp::div_scalar:
      return x / p0;
    case UnaryOp::clamp:
      return x < p0 ? p0 : (x > p1 ? p1 : x);
    case UnaryOp::silu:
      return x / (1.0 + std::exp(-x));
    case UnaryOp::gelu:
      return 0.5 * x * std::erfc(-x * 0.70710678118654752440);
    case UnaryOp::gelu_tanh: {
      const double u = 0.79788456080286535588 * (x + 0.044715 * x * x * x);
      return x * sigmoid_d(2.0 * u);
    }
    case UnaryOp::quick_gelu:
      return x * sigmoid_d(1.702 * x);
    case UnaryOp::sigmoid:
      return sigmoid_d(x);
    case UnaryOp::tanh:
      return std::tanh(x);
    case UnaryOp::relu:
      return x < 0.0 ? 0.0 : x;
  }
  return x;
}

double binary_f64(BinaryOp op, double a, double b) {
  switch (op) {
    case BinaryOp::add:
      return a + b;
    case BinaryOp::sub:
      return a - b;
    case BinaryOp::mul:
      return a * b;
    case BinaryOp::div:
      return a / b;
    case BinaryOp::geglu:
      return a * 0.5 * b * std::erfc(-b * 0.70710678118654752440);
  }
  return a;
}

// pow with the exponents PyTorch special-cases computed exactly (x*x, sqrt, x).
UnaryOp simplify_pow(UnaryOp op, double p0) {
  if (op != UnaryOp::pow) return op;
  if (p0 == 2.0) return UnaryOp::square;
  if (p0 == 0.5) return UnaryOp::sqrt;
  if (p0 == 1.0) return UnaryOp::identity;
  return op;
}

}  // namespace

void unary(UnaryOp op, const Tensor& x, const Tensor& out, double p0, double p1) noexcept {
  op = simplify_pow(op, p0);
  const int64_t n = out.numel();
  const auto views = coalesce(out.shape(), {&x});
  const StridedView& xv = views[0];
  const DType dtype = out.dtype();
  char* dst = static_cast<char*>(out.data_ptr());
  const int64_t itemsize = static_cast<int64_t>(out.itemsize());
  const int64_t chunks = num_chunks(n);
  if (dtype == DType::f64) {
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
    for (int64_t c = 0; c < chunks; ++c) {
      const int64_t start = c * kChunk, len = std::min(kChunk, n - start);
      double* y = reinterpret_cast<double*>(dst) + start;
      load_f64(xv, start, len, y);
      for (int64_t i = 0; i < len; ++i) y[i] = unary_f64(op, y[i], p0, p1);
    }
    return;
  }
  const SimdKernels& k = simd();
  const float f0 = static_cast<float>(p0), f1 = static_cast<float>(p1);
  const bool direct_in = dtype == DType::f32 && xv.contiguous() && xv.ndim == 1;
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t start = c * kChunk, len = std::min(kChunk, n - start);
    alignas(64) float xb[kChunk];
    alignas(64) float yb[kChunk];
    const float* xp = xb;
    if (direct_in) {
      xp = reinterpret_cast<const float*>(xv.data) + start;
    } else {
      load_f32(xv, start, len, xb);
    }
    float* yp = dtype == DType::f32 ? reinterpret_cast<float*>(dst) + start : yb;
    k.unary(op, xp, yp, len, f0, f1);
    if (dtype != DType::f32) store_f32(yb, dtype, dst + start * itemsize, len);
  }
}

void binary(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out) noexcept {
  const int64_t n = out.numel();
  const auto views = coalesce(out.shape(), {&a, &b});
  const StridedView& av = views[0];
  const StridedView& bv = views[1];
  const DType dtype = out.dtype();
  char* dst = static_cast<char*>(out.data_ptr());
  const int64_t itemsize = static_cast<int64_t>(out.itemsize());
  const int64_t chunks = num_chunks(n);
  if (dtype == DType::f64) {
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
    for (int64_t c = 0; c < chunks; ++c) {
      const int64_t start = c * kChunk, len = std::min(kChunk, n - start);
      double bb[kChunk];
      double* y = reinterpret_cast<double*>(dst) + start;
      load_f64(av, start, len, y);
      load_f64(bv, start, len, bb);
      for (int64_t i = 0; i < len; ++i) y[i] = binary_f64(op, y[i], bb[i]);
    }
    return;
  }
  const SimdKernels& k = simd();
  const bool f32 = dtype == DType::f32;
  const bool direct_a = f32 && av.ndim == 1 && av.strides[0] == 1;
  const bool direct_b = f32 && bv.ndim == 1 && bv.strides[0] == 1;
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t start = c * kChunk, len = std::min(kChunk, n - start);
    alignas(64) float ab[kChunk];
    alignas(64) float bb[kChunk];
    const float* ap = ab;
    const float* bp = bb;
    if (direct_a) {
      ap = reinterpret_cast<const float*>(av.data) + start;
    } else {
      load_f32(av, start, len, ab);
    }
    if (direct_b) {
      bp = reinterpret_cast<const float*>(bv.data) + start;
    } else {
      load_f32(bv, start, len, bb);
    }
    // The result goes to `ab` when it is a private buffer, so no third buffer is needed.
    float* yp = f32 ? reinterpret_cast<float*>(dst) + start : ab;
    k.binary(op, ap, bp, yp, len);
    if (!f32) store_f32(ab, dtype, dst + start * itemsize, len);
  }
}

void where(const Tensor& cond, const Tensor& a, const Tensor& b, const Tensor& out) noexcept {
  const int64_t n = out.numel();
  const auto views = coalesce(out.shape(), {&cond, &a, &b});
  const int64_t size = static_cast<int64_t>(out.itemsize());
  char* dst = static_cast<char*>(out.data_ptr());
  const int64_t chunks = num_chunks(n);
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t start = c * kChunk, len = std::min(kChunk, n - start);
    char cb[kChunk];
    alignas(64) char bb[kChunk * 8];
    char* y = dst + start * size;
    load_bytes(views[0], start, len, cb);
    load_bytes(views[1], start, len, y);
    load_bytes(views[2], start, len, bb);
    for (int64_t i = 0; i < len; ++i) {
      if (!cb[i]) std::memcpy(y + i * size, bb + i * size, static_cast<std::size_t>(size));
    }
  }
}

}  // namespace diffuse::cpu
