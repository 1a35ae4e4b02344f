#include "src/backends/cpu/strided.h"

#include <cstring>

namespace diffuse::cpu {
namespace {

// Element at `p` of `dtype` as double (scalar path of strided reads).
inline double read_scalar(const char* p, DType dtype) {
  switch (dtype) {
    case DType::f32: {
      float v;
      std::memcpy(&v, p, 4);
      return v;
    }
    case DType::f64: {
      double v;
      std::memcpy(&v, p, 8);
      return v;
    }
    case DType::f16: {
      uint16_t v;
      std::memcpy(&v, p, 2);
      return f16_bits_to_float(v);
    }
    case DType::bf16: {
      uint16_t v;
      std::memcpy(&v, p, 2);
      return bf16_bits_to_float(v);
    }
    default: {
      double v;
      convert(p, dtype, &v, DType::f64, 1);
      return v;
    }
  }
}

// Walks elements [start, start + n) of `v` as runs along the innermost dim and calls
// run(pointer, stride_in_elements, length, output_position) for each.
template <class Run>
void for_each_run(const StridedView& v, int64_t start, int64_t n, Run run) {
  if (v.ndim == 0) {
    run(v.data, int64_t{0}, n, int64_t{0});
    return;
  }
  int64_t idx[kMaxDims];
  int64_t rem = start;
  int64_t off = 0;
  for (int d = v.ndim - 1; d >= 0; --d) {
    idx[d] = rem % v.shape[d];
    rem /= v.shape[d];
    off += idx[d] * v.strides[d];
  }
  const int last = v.ndim - 1;
  const int64_t s = v.strides[last];
  int64_t pos = 0;
  while (pos < n) {
    const int64_t len = std::min(n - pos, v.shape[last] - idx[last]);
    run(v.data + off * v.itemsize, s, len, pos);
    pos += len;
    idx[last] += len;
    off += len * s;
    if (idx[last] == v.shape[last] && pos < n) {
      off -= v.shape[last] * s;
      idx[last] = 0;
      for (int d = last - 1; d >= 0; --d) {
        off += v.strides[d];
        if (++idx[d] < v.shape[d]) break;
        off -= v.shape[d] * v.strides[d];
        idx[d] = 0;
      }
    }
  }
}

}  // namespace

std::vector<StridedView> coalesce(const Shape& shape, const std::vector<const Tensor*>& tensors) {
  // Dims kept after dropping size-1 ones.
  std::vector<int> dims;
  for (int d = 0; d < static_cast<int>(shape.size()); ++d) {
    if (shape[d] != 1) dims.push_back(d);
  }
  std::vector<StridedView> views(tensors.size());
  for (std::size_t t = 0; t < tensors.size(); ++t) {
    StridedView& v = views[t];
    v.data = static_cast<const char*>(tensors[t]->data_ptr());
    v.dtype = tensors[t]->dtype();
    v.itemsize = static_cast<int64_t>(tensors[t]->itemsize());
  }
  int out_dims = 0;
  for (std::size_t k = 0; k < dims.size(); ++k) {
    const int d = dims[k];
    bool merge = out_dims > 0;
    for (std::size_t t = 0; merge && t < tensors.size(); ++t) {
      const StridedView& v = views[t];
      // The previous (outer) merged dim must step exactly over this one.
      merge = v.strides[out_dims - 1] == tensors[t]->stride(d) * shape[d];
    }
    if (merge) {
      for (std::size_t t = 0; t < tensors.size(); ++t) {
        StridedView& v = views[t];
        v.shape[out_dims - 1] *= shape[d];
        v.strides[out_dims - 1] = tensors[t]->stride(d);
      }
    } else {
      for (std::size_t t = 0; t < tensors.size(); ++t) {
        StridedView& v = views[t];
        v.shape[out_dims] = shape[d];
        v.strides[out_dims] = tensors[t]->stride(d);
      }
      ++out_dims;
    }
  }
  for (StridedView& v : views) v.ndim = out_dims;
  return views;
}

void to_f32(const void* src, DType dtype, float* dst, int64_t n) noexcept {
  if (dtype == DType::f32) {
    std::memcpy(dst, src, static_cast<std::size_t>(n) * 4);
  } else {
    convert(src, dtype, dst, DType::f32, static_cast<std::size_t>(n));
  }
}

void store_f32(const float* src, DType dtype, void* dst, int64_t n) noexcept {
  if (dtype == DType::f32) {
    std::memcpy(dst, src, static_cast<std::size_t>(n) * 4);
  } else {
    convert(src, DType::f32, dst, dtype, static_cast<std::size_t>(n));
  }
}

void load_f32(const StridedView& v, int64_t start, int64_t n, float* dst) noexcept {
  if (v.contiguous() && v.ndim == 1) {
    to_f32(v.data + start * v.itemsize, v.dtype, dst, n);
    return;
  }
  for_each_run(v, start, n, [&](const char* p, int64_t s, int64_t len, int64_t pos) {
    float* out = dst + pos;
    if (s == 1) {
      to_f32(p, v.dtype, out, len);
    } else if (s == 0) {
      const float value = static_cast<float>(read_scalar(p, v.dtype));
      for (int64_t i = 0; i < len; ++i) out[i] = value;
    } else if (v.dtype == DType::f32) {
      const float* f = reinterpret_cast<const float*>(p);
      for (int64_t i = 0; i < len; ++i) out[i] = f[i * s];
    } else {
      for (int64_t i = 0; i < len; ++i) {
        out[i] = static_cast<float>(read_scalar(p + i * s * v.itemsize, v.dtype));
      }
    }
  });
}

void load_f64(const StridedView& v, int64_t start, int64_t n, double* dst) noexcept {
  for_each_run(v, start, n, [&](const char* p, int64_t s, int64_t len, int64_t pos) {
    double* out = dst + pos;
    if (s == 1) {
      convert(p, v.dtype, out, DType::f64, static_cast<std::size_t>(len));
    } else {
      for (int64_t i = 0; i < len; ++i) out[i] = read_scalar(p + i * s * v.itemsize, v.dtype);
    }
  });
}

void load_bytes(const StridedView& v, int64_t start, int64_t n, char* dst) noexcept {
  const int64_t size = v.itemsize;
  for_each_run(v, start, n, [&](const char* p, int64_t s, int64_t len, int64_t pos) {
    char* out = dst + pos * size;
    if (s == 1) {
      std::memcpy(out, p, static_cast<std::size_t>(len * size));
    } else {
      for (int64_t i = 0; i < len; ++i) {
        std::memcpy(out + i * size, p + i * s * size, static_cast<std::size_t>(size));
      }
    }
  });
}

std::vector<float> f32_values(const Tensor& t) {
  if (!t.defined()) return {};
  return t.to_vector<float>();
}

}  // namespace diffuse::cpu
