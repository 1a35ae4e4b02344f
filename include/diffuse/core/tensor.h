// Tensor: a reference-counted Storage plus a view (shape, strides, element offset, dtype).
//
// Views (view, permute, slice, expand, ...) share the storage and never copy; contiguous(),
// clone() and to() copy. Strides and offsets are in elements. A default-constructed Tensor is
// "undefined" (defined() == false). Thread-safety: like std::shared_ptr — distinct Tensor
// objects may be used from different threads; writing the same bytes concurrently is a race.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "diffuse/core/device.h"
#include "diffuse/core/dtype.h"
#include "diffuse/core/error.h"
#include "diffuse/core/storage.h"

namespace diffuse {

using Shape = std::vector<int64_t>;

// "[1, 4, 64, 64]"
std::string shape_str(const Shape& shape);
// Product of the extents (1 for a scalar shape). Throws diffuse::Error on negative extents or
// int64 overflow.
int64_t shape_numel(const Shape& shape);
// Row-major strides of a contiguous tensor of `shape`.
Shape contiguous_strides(const Shape& shape);

class Tensor {
 public:
  Tensor() = default;

  // --- Factories (CPU, heap storage) ---------------------------------------------------------
  static Tensor empty(const Shape& shape, DType dtype = DType::f32);
  static Tensor zeros(const Shape& shape, DType dtype = DType::f32);
  static Tensor full(const Shape& shape, double value, DType dtype = DType::f32);
  // Copies `values` (converted to `dtype`) into a new contiguous tensor of `shape`.
  template <typename T>
  static Tensor from_vector(const std::vector<T>& values, const Shape& shape,
                            DType dtype = DTypeOf<T>::value);
  // A view of existing storage. Empty `strides` means contiguous. Throws diffuse::Error when the
  // view would reach outside the storage.
  static Tensor wrap(std::shared_ptr<Storage> storage, const Shape& shape, DType dtype,
                     int64_t offset = 0, const Shape& strides = {});

  // --- Properties ----------------------------------------------------------------------------
  bool defined() const { return storage_ != nullptr; }
  DType dtype() const { return dtype_; }
  Device device() const;
  const Shape& shape() const { return shape_; }
  const Shape& strides() const { return strides_; }
  int64_t dim() const { return static_cast<int64_t>(shape_.size()); }
  int64_t size(int64_t d) const { return shape_[wrap_dim(d)]; }
  int64_t stride(int64_t d) const { return strides_[wrap_dim(d)]; }
  int64_t numel() const { return numel_; }
  int64_t offset() const { return offset_; }
  std::size_t itemsize() const { return dtype_size(dtype_); }
  std::size_t nbytes() const { return static_cast<std::size_t>(numel_) * itemsize(); }
  bool is_contiguous() const;
  bool read_only() const;
  const std::shared_ptr<Storage>& storage() const { return storage_; }
  // Pointer to the first element of the view (storage data + offset).
  void* data_ptr() const;
  // Typed pointer; throws diffuse::Error when T does not match dtype().
  template <typename T>
  T* data() const;

  // Normalizes a possibly negative dimension index; throws diffuse::Error when out of range.
  int64_t wrap_dim(int64_t d) const;

  // --- Views (no copy) -----------------------------------------------------------------------
  // Same elements, new shape; one extent may be -1. Throws if the strides do not allow a view.
  Tensor view(const Shape& shape) const;
  // view() when possible, otherwise a contiguous copy.
  Tensor reshape(const Shape& shape) const;
  Tensor flatten(int64_t start_dim = 0, int64_t end_dim = -1) const;
  Tensor permute(const std::vector<int64_t>& dims) const;
  Tensor transpose(int64_t dim0, int64_t dim1) const;
  // Python-style slice [start:end:step] along `dim` (negative indices count from the end,
  // out-of-range bounds are clamped, step > 0).
  Tensor slice(int64_t dim, int64_t start, int64_t end, int64_t step = 1) const;
  Tensor narrow(int64_t dim, int64_t start, int64_t length) const;
  // Removes `dim`, keeping index `index` (negative counts from the end).
  Tensor select(int64_t dim, int64_t index) const;
  // Broadcasts size-1 dims (and new leading dims) to `shape`; -1 keeps the extent.
  Tensor expand(const Shape& shape) const;
  Tensor squeeze() const;
  Tensor squeeze(int64_t dim) const;
  Tensor unsqueeze(int64_t dim) const;
  // torch.chunk: ceil-sized pieces, the last may be smaller (fewer pieces when they run out).
  std::vector<Tensor> chunk(int64_t chunks, int64_t dim = 0) const;
  // torch.split with one size: pieces of `split_size`, the last may be smaller.
  std::vector<Tensor> split(int64_t split_size, int64_t dim = 0) const;
  std::vector<Tensor> split(const std::vector<int64_t>& sizes, int64_t dim = 0) const;

  // --- Copies --------------------------------------------------------------------------------
  // This tensor when already contiguous, otherwise a contiguous copy.
  Tensor contiguous() const;
  // Always a new contiguous copy.
  Tensor clone() const;
  // A contiguous copy converted to `dtype` (this tensor when the dtype matches and it is
  // contiguous).
  Tensor to(DType dtype) const;
  // Copies `src` into this view element by element, converting dtypes; `src` broadcasts to
  // this tensor's shape. Throws when this tensor is read-only or shapes are incompatible.
  void copy_(const Tensor& src);
  // Sets every element of this view to `value`.
  void fill_(double value);

  // The single element of a one-element tensor, converted to T.
  template <typename T>
  T item() const;
  // All elements in row-major order, converted to T.
  template <typename T>
  std::vector<T> to_vector() const;

  // "Tensor(f32, [1, 4, 8, 8])"
  std::string str() const;

 private:
  std::shared_ptr<Storage> storage_;
  Shape shape_;
  Shape strides_;
  int64_t offset_ = 0;
  int64_t numel_ = 0;
  DType dtype_ = DType::f32;
};

// --- Template implementations -----------------------------------------------------------------

template <typename T>
T* Tensor::data() const {
  DIFFUSE_CHECK(defined(), "Tensor::data: tensor is undefined");
  DIFFUSE_CHECK(DTypeOf<T>::value == dtype_, "Tensor::data: requested ",
                dtype_name(DTypeOf<T>::value), " but the tensor holds ", dtype_name(dtype_));
  return static_cast<T*>(data_ptr());
}

template <typename T>
Tensor Tensor::from_vector(const std::vector<T>& values, const Shape& shape, DType dtype) {
  DIFFUSE_CHECK(static_cast<int64_t>(values.size()) == shape_numel(shape),
                "Tensor::from_vector: ", values.size(), " values do not fill shape ",
                shape_str(shape));
  Tensor out = empty(shape, dtype);
  convert(values.data(), DTypeOf<T>::value, out.data_ptr(), dtype, values.size());
  return out;
}

template <typename T>
std::vector<T> Tensor::to_vector() const {
  Tensor c = to(DTypeOf<T>::value);
  std::vector<T> out(static_cast<std::size_t>(c.numel()));
  if (!out.empty()) __builtin_memcpy(out.data(), c.data_ptr(), out.size() * sizeof(T));
  return out;
}

template <typename T>
T Tensor::item() const {
  DIFFUSE_CHECK(numel_ == 1, "Tensor::item: expected one element, got shape ", shape_str(shape_));
  return to_vector<T>()[0];
}

}  // namespace diffuse
