#include "diffuse/core/tensor.h"

#include <algorithm>
#include <cstring>
#include <numeric>
#include <optional>
#include <sstream>

namespace diffuse {

std::string shape_str(const Shape& shape) {
  std::ostringstream os;
  os << '[';
  for (std::size_t i = 0; i < shape.size(); ++i) os << (i ? ", " : "") << shape[i];
  os << ']';
  return os.str();
}

int64_t shape_numel(const Shape& shape) {
  int64_t n = 1;
  for (const int64_t d : shape) {
    DIFFUSE_CHECK(d >= 0, "invalid shape ", shape_str(shape), ": negative extent");
    DIFFUSE_CHECK(!__builtin_mul_overflow(n, d, &n), "invalid shape ", shape_str(shape),
                  ": element count overflows int64");
  }
  return n;
}

Shape contiguous_strides(const Shape& shape) {
  Shape strides(shape.size());
  int64_t s = 1;
  for (std::size_t i = shape.size(); i-- > 0;) {
    strides[i] = s;
    s *= std::max<int64_t>(shape[i], 1);
  }
  return strides;
}

// --- Factories --------------------------------------------------------------------------------

Tensor Tensor::empty(const Shape& shape, DType dtype) {
  const int64_t n = shape_numel(shape);
  std::size_t bytes = 0;
  DIFFUSE_CHECK(!__builtin_mul_overflow(static_cast<std::size_t>(n), dtype_size(dtype), &bytes),
                "Tensor::empty: ", shape_str(shape), " x ", dtype_name(dtype), " overflows");
  return wrap(Storage::allocate(bytes), shape, dtype);
}

Tensor Tensor::zeros(const Shape& shape, DType dtype) {
  Tensor t = empty(shape, dtype);
  std::memset(t.data_ptr(), 0, t.nbytes());
  return t;
}

Tensor Tensor::full(const Shape& shape, double value, DType dtype) {
  Tensor t = empty(shape, dtype);
  t.fill_(value);
  return t;
}

Tensor Tensor::wrap(std::shared_ptr<Storage> storage, const Shape& shape, DType dtype,
                    int64_t offset, const Shape& strides) {
  DIFFUSE_CHECK(storage != nullptr, "Tensor::wrap: null storage");
  DIFFUSE_CHECK(strides.empty() || strides.size() == shape.size(), "Tensor::wrap: ", strides.size(),
                " strides for shape ", shape_str(shape));
  DIFFUSE_CHECK(offset >= 0, "Tensor::wrap: negative offset ", offset);
  Tensor t;
  t.numel_ = shape_numel(shape);
  t.shape_ = shape;
  t.strides_ = strides.empty() ? contiguous_strides(shape) : strides;
  t.offset_ = offset;
  t.dtype_ = dtype;
  if (t.numel_ > 0) {
    // Furthest element reached, in elements; strides must be non-negative.
    int64_t last = offset;
    for (std::size_t i = 0; i < shape.size(); ++i) {
      DIFFUSE_CHECK(t.strides_[i] >= 0, "Tensor::wrap: negative stride");
      int64_t reach = 0;
      DIFFUSE_CHECK(!__builtin_mul_overflow(shape[i] - 1, t.strides_[i], &reach) &&
                        !__builtin_add_overflow(last, reach, &last),
                    "Tensor::wrap: view extent overflows");
    }
    uint64_t need = 0;
    const bool overflow = __builtin_mul_overflow(static_cast<uint64_t>(last) + 1,
                                                 static_cast<uint64_t>(dtype_size(dtype)), &need);
    DIFFUSE_CHECK(!overflow && need <= storage->nbytes(), "Tensor::wrap: a ", dtype_name(dtype),
                  " view of ", shape_str(shape), " at offset ", offset, " needs ", need,
                  " bytes but the storage has ", storage->nbytes());
  }
  t.storage_ = std::move(storage);
  return t;
}

// --- Properties -------------------------------------------------------------------------------

Device Tensor::device() const {
  return storage_ ? storage_->device() : Device::cpu();
}

bool Tensor::is_contiguous() const {
  if (numel_ == 0) return true;  // PyTorch: an empty tensor is contiguous whatever its strides
  int64_t expected = 1;
  for (std::size_t i = shape_.size(); i-- > 0;) {
    if (shape_[i] == 1) continue;
    if (strides_[i] != expected) return false;
    expected *= shape_[i];
  }
  return true;
}

bool Tensor::read_only() const {
  return storage_ && storage_->read_only();
}

void* Tensor::data_ptr() const {
  DIFFUSE_CHECK(defined(), "Tensor: use of an undefined tensor");
  return static_cast<char*>(storage_->data()) + offset_ * static_cast<int64_t>(itemsize());
}

int64_t Tensor::wrap_dim(int64_t d) const {
  const int64_t n = dim();
  DIFFUSE_CHECK(d >= -n && d < n, "dimension ", d, " is out of range for a tensor of shape ",
                shape_str(shape_));
  return d < 0 ? d + n : d;
}

// --- Views ------------------------------------------------------------------------------------

namespace {

Shape infer_shape(const Shape& shape, int64_t numel, const char* op) {
  Shape out = shape;
  int64_t known = 1;
  int infer = -1;
  for (std::size_t i = 0; i < out.size(); ++i) {
    if (out[i] == -1) {
      DIFFUSE_CHECK(infer < 0, op, ": only one dimension can be -1 in ", shape_str(shape));
      infer = static_cast<int>(i);
    } else {
      DIFFUSE_CHECK(out[i] >= 0, op, ": invalid extent in ", shape_str(shape));
      DIFFUSE_CHECK(!__builtin_mul_overflow(known, out[i], &known), op, ": shape ",
                    shape_str(shape), " overflows int64");
    }
  }
  if (infer >= 0) {
    DIFFUSE_CHECK(known != 0 && numel % known == 0, op, ": cannot infer -1 in ", shape_str(shape),
                  " for ", numel, " elements");
    out[infer] = numel / known;
  }
  DIFFUSE_CHECK(shape_numel(out) == numel, op, ": shape ", shape_str(shape), " is invalid for ",
                numel, " elements");
  return out;
}

// Strides for viewing (shape, strides) as new_shape without copying, following PyTorch's
// computeStride; empty result when impossible.
std::optional<Shape> view_strides(const Shape& shape, const Shape& strides,
                                  const Shape& new_shape) {
  Shape out(new_shape.size());
  if (shape_numel(shape) == 0) return contiguous_strides(new_shape);
  // A 0-dim tensor has one element and no strides: any shape of one element views it (the loop
  // below would find no dimension to match the new size-1 dimensions against).
  if (shape.empty()) return Shape(new_shape.size(), 1);
  int64_t view_d = static_cast<int64_t>(new_shape.size()) - 1;
  int64_t chunk_base_stride = strides.empty() ? 1 : strides.back();
  int64_t tensor_numel = 1;
  int64_t view_numel = 1;
  for (int64_t tensor_d = static_cast<int64_t>(shape.size()) - 1; tensor_d >= 0; --tensor_d) {
    tensor_numel *= shape[tensor_d];
    if (tensor_d == 0 ||
        (shape[tensor_d - 1] != 1 && strides[tensor_d - 1] != tensor_numel * chunk_base_stride)) {
      while (view_d >= 0 && (view_numel < tensor_numel || new_shape[view_d] == 1)) {
        out[view_d] = view_numel * chunk_base_stride;
        view_numel *= new_shape[view_d];
        --view_d;
      }
      if (view_numel != tensor_numel) return std::nullopt;
      if (tensor_d > 0) {
        chunk_base_stride = strides[tensor_d - 1];
        tensor_numel = 1;
        view_numel = 1;
      }
    }
  }
  if (view_d != -1) return std::nullopt;
  return out;
}

}  // namespace

Tensor Tensor::view(const Shape& shape) const {
  const Shape s = infer_shape(shape, numel_, "view");
  auto st = view_strides(shape_, strides_, s);
  DIFFUSE_CHECK(st.has_value(), "view: cannot view a tensor of shape ", shape_str(shape_),
                " with strides ", shape_str(strides_), " as ", shape_str(s),
                " without a copy; use reshape()");
  Tensor t = *this;
  t.shape_ = s;
  t.strides_ = *st;
  return t;
}

Tensor Tensor::reshape(const Shape& shape) const {
  const Shape s = infer_shape(shape, numel_, "reshape");
  if (view_strides(shape_, strides_, s).has_value()) return view(s);
  return contiguous().view(s);
}

Tensor Tensor::flatten(int64_t start_dim, int64_t end_dim) const {
  if (dim() == 0) return reshape({1});
  start_dim = wrap_dim(start_dim);
  end_dim = wrap_dim(end_dim);
  DIFFUSE_CHECK(start_dim <= end_dim, "flatten: start_dim ", start_dim, " > end_dim ", end_dim);
  Shape s(shape_.begin(), shape_.begin() + start_dim);
  int64_t n = 1;
  for (int64_t i = start_dim; i <= end_dim; ++i) n *= shape_[i];
  s.push_back(n);
  s.insert(s.end(), shape_.begin() + end_dim + 1, shape_.end());
  return reshape(s);
}

Tensor Tensor::permute(const std::vector<int64_t>& dims) const {
  DIFFUSE_CHECK(static_cast<int64_t>(dims.size()) == dim(), "permute: ", dims.size(),
                " dims given for a tensor of shape ", shape_str(shape_));
  std::vector<bool> seen(dims.size(), false);
  Tensor t = *this;
  for (std::size_t i = 0; i < dims.size(); ++i) {
    const int64_t d = wrap_dim(dims[i]);
    DIFFUSE_CHECK(!seen[d], "permute: dimension ", d, " repeated");
    seen[d] = true;
    t.shape_[i] = shape_[d];
    t.strides_[i] = strides_[d];
  }
  return t;
}

Tensor Tensor::transpose(int64_t dim0, int64_t dim1) const {
  dim0 = wrap_dim(dim0);
  dim1 = wrap_dim(dim1);
  Tensor t = *this;
  std::swap(t.shape_[dim0], t.shape_[dim1]);
  std::swap(t.strides_[dim0], t.strides_[dim1]);
  return t;
}

Tensor Tensor::slice(int64_t d, int64_t start, int64_t end, int64_t step) const {
  d = wrap_dim(d);
  DIFFUSE_CHECK(step > 0, "slice: step must be positive, got ", step);
  const int64_t n = shape_[d];
  if (start < 0) start += n;
  if (end < 0) end += n;
  start = std::clamp<int64_t>(start, 0, n);
  end = std::clamp<int64_t>(end, start, n);
  Tensor t = *this;
  t.offset_ += start * strides_[d];
  // (end - start + step - 1) / step would overflow for huge steps.
  t.shape_[d] = end > start ? (end - start - 1) / step + 1 : 0;
  // The stride of a dimension of at most one element is never used to address memory; keep it
  // finite when stride * step overflows.
  if (__builtin_mul_overflow(strides_[d], step, &t.strides_[d])) {
    DIFFUSE_ASSERT(t.shape_[d] <= 1);
    t.strides_[d] = strides_[d];
  }
  t.numel_ = shape_numel(t.shape_);
  return t;
}

Tensor Tensor::narrow(int64_t d, int64_t start, int64_t length) const {
  d = wrap_dim(d);
  if (start < 0) start += shape_[d];
  DIFFUSE_CHECK(start >= 0 && start <= shape_[d] && length >= 0 && length <= shape_[d] - start,
                "narrow: start ", start, " and length ", length, " are outside dimension ", d,
                " of shape ", shape_str(shape_));
  return slice(d, start, start + length);
}

Tensor Tensor::select(int64_t d, int64_t index) const {
  d = wrap_dim(d);
  const int64_t n = shape_[d];
  DIFFUSE_CHECK(index >= -n && index < n, "select: index ", index,
                " is out of range for dimension ", d, " of shape ", shape_str(shape_));
  if (index < 0) index += n;
  Tensor t = *this;
  t.offset_ += index * strides_[d];
  t.shape_.erase(t.shape_.begin() + d);
  t.strides_.erase(t.strides_.begin() + d);
  t.numel_ = shape_numel(t.shape_);
  return t;
}

Tensor Tensor::expand(const Shape& shape) const {
  DIFFUSE_CHECK(shape.size() >= shape_.size(), "expand: cannot expand ", shape_str(shape_), " to ",
                shape_str(shape));
  const std::size_t lead = shape.size() - shape_.size();
  Tensor t = *this;
  t.shape_ = shape;
  t.strides_.assign(shape.size(), 0);
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i < lead) {
      DIFFUSE_CHECK(shape[i] >= 0, "expand: invalid extent -1 for a new leading dimension");
      continue;
    }
    const int64_t cur = shape_[i - lead];
    const int64_t want = shape[i] == -1 ? cur : shape[i];
    if (cur == want) {
      t.shape_[i] = cur;
      t.strides_[i] = strides_[i - lead];
    } else {
      DIFFUSE_CHECK(cur == 1, "expand: dimension ", i, " of size ", cur, " cannot be broadcast to ",
                    want, " (", shape_str(shape_), " -> ", shape_str(shape), ")");
      t.shape_[i] = want;
    }
  }
  t.numel_ = shape_numel(t.shape_);
  return t;
}

Tensor Tensor::squeeze() const {
  Tensor t = *this;
  t.shape_.clear();
  t.strides_.clear();
  for (std::size_t i = 0; i < shape_.size(); ++i) {
    if (shape_[i] != 1) {
      t.shape_.push_back(shape_[i]);
      t.strides_.push_back(strides_[i]);
    }
  }
  return t;
}

Tensor Tensor::squeeze(int64_t d) const {
  if (dim() == 0) {
    // PyTorch treats a 0-dim tensor as having one dimension for dim arguments (0 or -1).
    DIFFUSE_CHECK(d == 0 || d == -1, "squeeze: dimension ", d,
                  " is out of range for a 0-dim tensor");
    return *this;
  }
  d = wrap_dim(d);
  if (shape_[d] != 1) return *this;
  Tensor t = *this;
  t.shape_.erase(t.shape_.begin() + d);
  t.strides_.erase(t.strides_.begin() + d);
  return t;
}

Tensor Tensor::unsqueeze(int64_t d) const {
  const int64_t n = dim() + 1;
  DIFFUSE_CHECK(d >= -n && d < n, "unsqueeze: dimension ", d, " is out of range for shape ",
                shape_str(shape_));
  if (d < 0) d += n;
  Tensor t = *this;
  const int64_t stride = d < dim() ? strides_[d] * shape_[d] : 1;
  t.shape_.insert(t.shape_.begin() + d, 1);
  t.strides_.insert(t.strides_.begin() + d, stride);
  return t;
}

std::vector<Tensor> Tensor::chunk(int64_t chunks, int64_t d) const {
  DIFFUSE_CHECK(chunks > 0, "chunk: number of chunks must be positive, got ", chunks);
  d = wrap_dim(d);
  const int64_t n = shape_[d];
  // torch.chunk of an empty dimension returns `chunks` empty pieces (split would return one).
  if (n == 0) return split(std::vector<int64_t>(static_cast<std::size_t>(chunks), 0), d);
  const int64_t size = n / chunks + (n % chunks != 0 ? 1 : 0);  // ceil without overflow
  return split(size, d);
}

std::vector<Tensor> Tensor::split(int64_t split_size, int64_t d) const {
  DIFFUSE_CHECK(split_size > 0, "split: split_size must be positive, got ", split_size);
  d = wrap_dim(d);
  std::vector<Tensor> out;
  for (int64_t start = 0; start < shape_[d]; start += split_size)
    out.push_back(slice(d, start, std::min(start + split_size, shape_[d])));
  if (out.empty()) out.push_back(*this);
  return out;
}

std::vector<Tensor> Tensor::split(const std::vector<int64_t>& sizes, int64_t d) const {
  d = wrap_dim(d);
  int64_t total = 0;
  for (const int64_t s : sizes) {
    DIFFUSE_CHECK(s >= 0, "split: negative size ", s);
    DIFFUSE_CHECK(!__builtin_add_overflow(total, s, &total), "split: sizes overflow int64");
  }
  DIFFUSE_CHECK(total == shape_[d], "split: sizes sum to ", total, " but dimension ", d, " has ",
                shape_[d]);
  std::vector<Tensor> out;
  int64_t start = 0;
  for (const int64_t s : sizes) {
    out.push_back(slice(d, start, start + s));
    start += s;
  }
  return out;
}

// --- Copies -----------------------------------------------------------------------------------

namespace {

// Copies/converts a strided source into a strided destination of the same shape. Adjacent
// dimensions that are contiguous in both are merged so that the inner loop is as long as
// possible.
void strided_copy(const Tensor& dst, const Tensor& src) {
  const int64_t n = dst.numel();
  if (n == 0) return;
  // Merge dims.
  Shape shape, ds, ss;
  for (int64_t i = 0; i < dst.dim(); ++i) {
    if (dst.size(i) == 1) continue;
    if (!shape.empty() && ds.back() == dst.stride(i) * dst.size(i) &&
        ss.back() == src.stride(i) * dst.size(i)) {
      shape.back() *= dst.size(i);
      ds.back() = dst.stride(i);
      ss.back() = src.stride(i);
    } else {
      shape.push_back(dst.size(i));
      ds.push_back(dst.stride(i));
      ss.push_back(src.stride(i));
    }
  }
  if (shape.empty()) {
    shape = {1};
    ds = {1};
    ss = {1};
  }
  const int nd = static_cast<int>(shape.size());
  const int64_t inner = shape.back();
  const int64_t d_inner = ds.back();
  const int64_t s_inner = ss.back();
  const std::size_t dsz = dst.itemsize();
  const std::size_t ssz = src.itemsize();
  const bool same = dst.dtype() == src.dtype();
  auto* dbase = static_cast<char*>(dst.data_ptr());
  const auto* sbase = static_cast<const char*>(src.data_ptr());
  std::vector<char> sbuf, dbuf;
  if (!(s_inner == 1 && d_inner == 1)) {
    sbuf.resize(static_cast<std::size_t>(inner) * ssz);
    dbuf.resize(static_cast<std::size_t>(inner) * dsz);
  }
  std::vector<int64_t> idx(static_cast<std::size_t>(nd), 0);
  const int64_t outer = n / inner;
  for (int64_t o = 0; o < outer; ++o) {
    int64_t doff = 0, soff = 0;
    for (int k = 0; k < nd - 1; ++k) {
      doff += idx[k] * ds[k];
      soff += idx[k] * ss[k];
    }
    char* d = dbase + doff * static_cast<int64_t>(dsz);
    const char* s = sbase + soff * static_cast<int64_t>(ssz);
    if (s_inner == 1 && d_inner == 1) {
      if (same) {
        std::memcpy(d, s, static_cast<std::size_t>(inner) * dsz);
      } else {
        convert(s, src.dtype(), d, dst.dtype(), static_cast<std::size_t>(inner));
      }
    } else {
      for (int64_t i = 0; i < inner; ++i)
        std::memcpy(sbuf.data() + i * ssz, s + i * s_inner * static_cast<int64_t>(ssz), ssz);
      convert(sbuf.data(), src.dtype(), dbuf.data(), dst.dtype(), static_cast<std::size_t>(inner));
      for (int64_t i = 0; i < inner; ++i)
        std::memcpy(d + i * d_inner * static_cast<int64_t>(dsz), dbuf.data() + i * dsz, dsz);
    }
    for (int k = nd - 2; k >= 0; --k) {
      if (++idx[k] < shape[k]) break;
      idx[k] = 0;
    }
  }
}

}  // namespace

Tensor Tensor::contiguous() const {
  if (is_contiguous()) return *this;
  return clone();
}

Tensor Tensor::clone() const {
  DIFFUSE_CHECK(defined(), "clone: tensor is undefined");
  Tensor out = empty(shape_, dtype_);
  strided_copy(out, *this);
  return out;
}

Tensor Tensor::to(DType dtype) const {
  DIFFUSE_CHECK(defined(), "to: tensor is undefined");
  if (dtype == dtype_ && is_contiguous()) return *this;
  Tensor out = empty(shape_, dtype);
  strided_copy(out, *this);
  return out;
}

void Tensor::copy_(const Tensor& src) {
  DIFFUSE_CHECK(defined() && src.defined(), "copy_: undefined tensor");
  DIFFUSE_CHECK(!read_only(), "copy_: destination ", str(), " is read-only (memory-mapped file)");
  strided_copy(*this, src.expand(shape_));
}

void Tensor::fill_(double value) {
  DIFFUSE_CHECK(defined(), "fill_: tensor is undefined");
  DIFFUSE_CHECK(!read_only(), "fill_: tensor ", str(), " is read-only");
  // A 0-dim source expands to every shape, 0-dim included (a [1] source would not).
  Tensor one = empty({}, dtype_);
  convert(&value, DType::f64, one.data_ptr(), dtype_, 1);
  strided_copy(*this, one.expand(shape_));
}

std::string Tensor::str() const {
  if (!defined()) return "Tensor(undefined)";
  return "Tensor(" + std::string(dtype_name(dtype_)) + ", " + shape_str(shape_) + ")";
}

}  // namespace diffuse
