// Strided access helpers shared by the CPU kernels: operands that share one logical shape are
// coalesced (adjacent dims merged where every operand's strides allow, size-1 dims dropped), then
// read in row-major chunks into contiguous f32/f64/byte buffers. This is the general path of
// every elementwise kernel; contiguous f32 operands skip it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "diffuse/core/tensor.h"

namespace diffuse::cpu {

inline constexpr int kMaxDims = 16;

struct StridedView {
  const char* data = nullptr;  // first element
  DType dtype = DType::f32;
  int64_t itemsize = 4;
  int ndim = 0;  // 0 = a single element
  int64_t shape[kMaxDims] = {};
  int64_t strides[kMaxDims] = {};  // in elements
  // True when the view is row-major contiguous (reads are plain conversions).
  bool contiguous() const { return ndim == 0 || (ndim == 1 && strides[0] == 1); }
};

// Views of `tensors` (each of shape `shape`, typically expanded) over a common coalesced shape.
// Requires shape.size() <= kMaxDims (checked by src/ops).
std::vector<StridedView> coalesce(const Shape& shape, const std::vector<const Tensor*>& tensors);

// Elements [start, start + n) of `v` in row-major order, converted.
void load_f32(const StridedView& v, int64_t start, int64_t n, float* dst) noexcept;
void load_f64(const StridedView& v, int64_t start, int64_t n, double* dst) noexcept;
// The same as raw bytes (itemsize each), no conversion.
void load_bytes(const StridedView& v, int64_t start, int64_t n, char* dst) noexcept;

// Converts n contiguous f32 values to `dtype` at dst (a plain copy for f32).
void store_f32(const float* src, DType dtype, void* dst, int64_t n) noexcept;
// Converts n contiguous elements of `dtype` to f32 (a plain copy for f32).
void to_f32(const void* src, DType dtype, float* dst, int64_t n) noexcept;

// A contiguous f32 copy of a small parameter tensor (norm weights), or an empty vector when `t`
// is undefined.
std::vector<float> f32_values(const Tensor& t);

// OpenMP chunking: kernels work on chunks of kChunk elements and only go parallel when there
// are at least kParallelMin elements (below that, thread start-up costs more than it saves).
inline constexpr int64_t kChunk = 4096;
inline constexpr int64_t kParallelMin = 32768;

}  // namespace diffuse::cpu
