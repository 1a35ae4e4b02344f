// oneDNN matmul / convolution with two caches:
//  - primitives, keyed by (op, shapes, strides, dtypes, attributes), so a shape seen before costs
//    no primitive creation;
//  - weights, converted to the compute dtype and reordered into the layout the primitive picked
//    with format_tag::any, keyed by (storage address, offset, shape, strides, dtype, compute,
//    chosen layout). An entry holds a weak_ptr to the storage: a lookup only hits while that
//    storage is alive (a new storage at a recycled address never aliases a dead one), and every
//    call sweeps out entries whose storage has died, so a freed weight's copy is released at the
//    next linalg call at the latest.
// Layers do not use the weight cache: they own their copies in a DnnlWeight (see the header),
// which lets the copy in the compute layout be the only one in memory.
#include "src/backends/cpu/dnnl_linalg.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <oneapi/dnnl/dnnl.hpp>
#include <sstream>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "diffuse/core/threads.h"
#include "src/backends/cpu/dnnl_layout.h"
#include "src/backends/cpu/kernels.h"

namespace diffuse::cpu {
namespace {

using dnnl::memory;
using Dims = memory::dims;

dnnl::engine& engine() {
  static dnnl::engine e(dnnl::engine::kind::cpu, 0);
  return e;
}

dnnl::stream& stream() {
  // Streams are cheap but not meant to be shared between threads executing at once.
  thread_local dnnl::stream s(engine());
  return s;
}

memory::data_type dnnl_type(DType t) {
  switch (t) {
    case DType::f32:
      return memory::data_type::f32;
    case DType::bf16:
      return memory::data_type::bf16;
    case DType::f16:
      return memory::data_type::f16;
    default:
      break;
  }
  DIFFUSE_ASSERT(false);
  return memory::data_type::undef;
}

void append_activation(dnnl::post_ops& ops, ops::Activation post) {
  switch (post) {
    case ops::Activation::none:
      return;
    case ops::Activation::silu:
      ops.append_eltwise(1.f, dnnl::algorithm::eltwise_swish, 1.f, 0.f);
      return;
    case ops::Activation::quick_gelu:
      // x * sigmoid(1.702 x) is swish with alpha = 1.702 (OpenAI CLIP's constant).
      ops.append_eltwise(1.f, dnnl::algorithm::eltwise_swish, 1.702f, 0.f);
      return;
    case ops::Activation::gelu:
      ops.append_eltwise(1.f, dnnl::algorithm::eltwise_gelu_erf, 0.f, 0.f);
      return;
    case ops::Activation::gelu_tanh:
      ops.append_eltwise(1.f, dnnl::algorithm::eltwise_gelu_tanh, 0.f, 0.f);
      return;
    case ops::Activation::relu:
      ops.append_eltwise(1.f, dnnl::algorithm::eltwise_relu, 0.f, 0.f);
      return;
  }
}

dnnl::primitive_attr make_attr(ops::Activation post) {
  dnnl::primitive_attr attr;
  dnnl::post_ops ops;
  append_activation(ops, post);
  attr.set_post_ops(ops);
  return attr;
}

// --- Primitive cache ---------------------------------------------------------------------------

template <typename PD>
struct CachedPrimitive {
  PD pd;
  dnnl::primitive prim;
};

template <typename PD>
class PrimitiveCache {
 public:
  template <typename Make>
  std::shared_ptr<const CachedPrimitive<PD>> get(const std::string& key, Make make) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = map_.find(key);
      if (it != map_.end()) return it->second;
    }
    auto entry = std::make_shared<CachedPrimitive<PD>>();
    entry->pd = make();
    entry->prim = dnnl::primitive(entry->pd);
    std::lock_guard<std::mutex> lock(mu_);
    // Bounded: a workload with ever-changing shapes must not grow without limit.
    if (map_.size() >= kMaxEntries) map_.clear();
    map_.emplace(key, entry);
    return entry;
  }
  void clear() {
    std::lock_guard<std::mutex> lock(mu_);
    map_.clear();
  }

 private:
  static constexpr std::size_t kMaxEntries = 1024;
  std::mutex mu_;
  std::unordered_map<std::string, std::shared_ptr<const CachedPrimitive<PD>>> map_;
};

PrimitiveCache<dnnl::matmul::primitive_desc>& matmul_cache() {
  static PrimitiveCache<dnnl::matmul::primitive_desc> c;
  return c;
}
PrimitiveCache<dnnl::convolution_forward::primitive_desc>& conv_cache() {
  static PrimitiveCache<dnnl::convolution_forward::primitive_desc> c;
  return c;
}

template <typename V>
void put_dims(std::ostringstream& os, const V& v) {
  os << '[';
  for (auto d : v) os << d << ',';
  os << ']';
}

// --- Weight cache ------------------------------------------------------------------------------

struct WeightKey {
  const Storage* storage;
  int64_t offset;
  Shape shape;
  Shape strides;
  DType dtype;
  DType compute;
  int kind;  // 0 = linear ([N, K] read as [K, N]), 1 = conv
  bool operator<(const WeightKey& o) const {
    return std::tie(storage, offset, shape, strides, dtype, compute, kind) <
           std::tie(o.storage, o.offset, o.shape, o.strides, o.dtype, o.compute, o.kind);
  }
};

struct WeightEntry {
  std::weak_ptr<Storage> storage;
  std::vector<std::pair<memory::desc, memory>> layouts;  // one per layout a primitive asked for
};

class WeightCache {
 public:
  // The weight in `layout`; `make_plain` returns a memory in the plain layout of the compute
  // dtype to reorder from (only called on a miss).
  template <typename MakePlain>
  memory get(const Tensor& w, DType compute, int kind, const memory::desc& layout,
             MakePlain make_plain) {
    WeightKey key{w.storage().get(), w.offset(), w.shape(), w.strides(), w.dtype(), compute, kind};
    {
      std::lock_guard<std::mutex> lock(mu_);
      sweep_locked();
      auto it = map_.find(key);
      if (it != map_.end() && !it->second.storage.expired()) {
        for (auto& [desc, mem] : it->second.layouts) {
          if (desc == layout) return mem;
        }
      }
    }
    // Miss: convert + reorder outside the lock (reorders run on all threads).
    auto [plain_mem, keep_alive] = make_plain();
    memory out(layout, engine());
    dnnl::reorder(plain_mem, out).execute(stream(), plain_mem, out);
    stream().wait();
    std::lock_guard<std::mutex> lock(mu_);
    WeightEntry& e = map_[key];
    e.storage = w.storage();
    e.layouts.emplace_back(layout, out);
    return out;
  }
  void clear() {
    std::lock_guard<std::mutex> lock(mu_);
    map_.clear();
  }
  std::size_t size() {
    std::lock_guard<std::mutex> lock(mu_);
    sweep_locked();
    return map_.size();
  }

 private:
  void sweep_locked() {
    for (auto it = map_.begin(); it != map_.end();) {
      if (it->second.storage.expired()) {
        it = map_.erase(it);
      } else {
        ++it;
      }
    }
  }
  std::mutex mu_;
  std::map<WeightKey, WeightEntry> map_;
};

WeightCache& weight_cache() {
  static WeightCache c;
  return c;
}

memory wrap(const memory::desc& md, const Tensor& t) {
  return memory(md, engine(), const_cast<void*>(t.data_ptr()));
}

// True when every value of `from` is exactly representable in `compute`, so that a copy in the
// compute dtype can stand in for the original.
bool exact_in(DType from, DType compute) {
  return from == compute || (compute == DType::f32 && (from == DType::bf16 || from == DType::f16));
}

// Hands the resident pages of a weight that lies in a read-only memory-mapped file back to the
// kernel. The mapping is private and never written, so a later access re-reads the same bytes
// from the file: the tensor stays valid, it just stops counting in the resident set. Only the
// pages wholly inside the tensor are dropped (its neighbours' bytes may be in use).
void release_mapped_pages(const Tensor& t) {
  const auto& s = t.storage();
  if (!s || s->kind() != Storage::Kind::mapped_file || !s->read_only() || !t.is_contiguous()) {
    return;
  }
  const long page_size = ::sysconf(_SC_PAGESIZE);
  if (page_size <= 0) return;
  const auto page = static_cast<std::uintptr_t>(page_size);
  const auto first = reinterpret_cast<std::uintptr_t>(t.data_ptr());
  const std::uintptr_t begin = (first + page - 1) / page * page;
  const std::uintptr_t end = (first + t.nbytes()) / page * page;
  // Advice only: a failure leaves the pages resident, which is harmless.
  if (end > begin) (void)::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
}

DType dtype_of(memory::data_type t) {
  switch (t) {
    case memory::data_type::f32:
      return DType::f32;
    case memory::data_type::bf16:
      return DType::bf16;
    case memory::data_type::f16:
      return DType::f16;
    default:
      break;
  }
  DIFFUSE_ASSERT(false);
  return DType::f32;
}

// `t` as f32 contiguous (bias).
Tensor f32_contiguous(const Tensor& t) {
  return t.dtype() == DType::f32 ? t.contiguous() : t.to(DType::f32);
}

// True when `t` can be described to oneDNN in place as a 2-D [rows, last] row-major matrix.
bool rows_in_place(const Tensor& t) {
  if (t.stride(-1) != 1) return false;
  // Leading dims must collapse into one with stride t.stride(-2) * ... like a contiguous view.
  int64_t expected = t.size(-1);
  for (int64_t d = t.dim() - 2; d >= 0; --d) {
    if (t.size(d) != 1 && t.stride(d) != expected) return false;
    expected *= t.size(d);
  }
  return true;
}

// A weight as dnnl_linear / dnnl_conv2d receive it: a plain tensor (its copies live in the
// global weight cache) or a layer-owned DnnlWeight.
struct WeightArg {
  const Tensor* tensor = nullptr;
  const DnnlWeight* owned = nullptr;
  const Shape& shape() const { return owned ? owned->shape() : tensor->shape(); }
  int64_t size(std::size_t d) const { return shape()[d]; }
};

}  // namespace

// --- Layer-owned weights -----------------------------------------------------------------------

struct DnnlWeight::Copies {
  struct Copy {
    memory::desc layout;  // the layout a primitive asked for
    memory::desc user;    // the plain layout in the same dtype (to re-create the plain tensor)
    memory mem;
    bool aliases_plain = false;  // `mem` is the plain tensor itself (no copy)
  };
  std::vector<Copy> list;
};

DnnlWeight::DnnlWeight(Tensor plain, DType dtype)
    : shape_(plain.shape()),
      dtype_(dtype),
      plain_(std::move(plain)),
      copies_(std::make_unique<Copies>()) {}

DnnlWeight::~DnnlWeight() = default;

Tensor DnnlWeight::plain() const {
  std::lock_guard<std::mutex> lock(mu_);
  return plain_locked().contiguous();
}

bool DnnlWeight::holds_plain() const {
  std::lock_guard<std::mutex> lock(mu_);
  return plain_.defined();
}

std::size_t DnnlWeight::copy_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::size_t bytes = 0;
  for (const auto& c : copies_->list) {
    if (!c.aliases_plain) bytes += c.layout.get_size();
  }
  return bytes;
}

Tensor DnnlWeight::plain_locked() const {
  if (plain_.defined()) return plain_.to(dtype_);
  // Dropped: every copy holds the values exactly (exact_in), any of them will do; prefer one in
  // the weight's own dtype.
  DIFFUSE_ASSERT(!copies_->list.empty());
  const Copies::Copy* from = &copies_->list.front();
  for (const auto& c : copies_->list) {
    if (dtype_of(c.layout.data_type()) == dtype_) from = &c;
  }
  Tensor t = Tensor::empty(shape_, dtype_of(from->layout.data_type()));
  memory src = from->mem;
  memory dst = wrap(from->user, t);
  dnnl::reorder(src, dst).execute(stream(), src, dst);
  stream().wait();
  return t.to(dtype_);
}

struct WeightAccess {
  // The weight in `layout` (compute dtype `compute`); `user` is its plain layout in that dtype.
  static memory get(const DnnlWeight& w, DType compute, const memory::desc& layout,
                    const memory::desc& user) {
    std::lock_guard<std::mutex> lock(w.mu_);
    auto& list = w.copies_->list;
    for (const auto& c : list) {
      if (c.layout == layout) return c.mem;
    }
    DnnlWeight::Copies::Copy copy{layout, user, memory(), false};
    const Tensor& plain = w.plain_;
    if (plain.defined() && plain.dtype() == w.dtype_ && w.dtype_ == compute &&
        plain.is_contiguous() && layout == user) {
      copy.mem = wrap(user, plain);  // already usable: no copy at all
      copy.aliases_plain = true;
    } else {
      copy.mem = memory(layout, engine());
      // From a copy of the same dtype in another layout (exact), else from the plain tensor
      // converted to the compute dtype.
      const DnnlWeight::Copies::Copy* from = nullptr;
      for (const auto& c : list) {
        if (dtype_of(c.layout.data_type()) == compute) from = &c;
      }
      if (from != nullptr) {
        memory src = from->mem;
        dnnl::reorder(src, copy.mem).execute(stream(), src, copy.mem);
      } else {
        const Tensor converted = w.plain_locked().to(compute);
        memory src = wrap(user, converted);
        dnnl::reorder(src, copy.mem).execute(stream(), src, copy.mem);
      }
      stream().wait();
    }
    list.push_back(copy);
    const bool plain_in_use =
        std::any_of(list.begin(), list.end(), [](const auto& c) { return c.aliases_plain; });
    if (plain.defined() && !plain_in_use) {
      release_mapped_pages(plain);
      if (exact_in(w.dtype_, compute)) w.plain_ = Tensor();
    }
    return copy.mem;
  }
};

namespace {

// The weight in the primitive's layout `layout`; `user` is the plain layout of the weight in the
// compute dtype; kind: 0 = linear, 1 = conv (weight cache key).
memory weight_memory(const WeightArg& w, DType compute, int kind, const memory::desc& layout,
                     const memory::desc& user) {
  if (w.owned != nullptr) return WeightAccess::get(*w.owned, compute, layout, user);
  const Tensor& weight = *w.tensor;
  if (weight.dtype() == compute && weight.is_contiguous() && layout == user) {
    return wrap(user, weight);  // already usable: no copy at all
  }
  return weight_cache().get(weight, compute, kind, layout, [&] {
    Tensor plain = weight.to(compute);
    return std::make_pair(wrap(user, plain), plain);
  });
}

}  // namespace

// --- linear ------------------------------------------------------------------------------------

namespace {

Tensor linear_impl(const Tensor& x, const WeightArg& weight, const Tensor& bias, DType compute,
                   ops::Activation post) {
  const int64_t k = x.size(-1);
  const int64_t n = weight.size(0);
  const int64_t m = k == 0 ? x.numel() : x.numel() / k;
  Shape out_shape = x.shape();
  out_shape.back() = n;
  Tensor out = Tensor::empty(out_shape, DType::f32);
  if (out.numel() == 0) return out;
  if (k == 0) {
    // Empty reduction: the result is post(bias) (or post(0)); run it through oneDNN anyway would
    // need a zero-sized primitive, so compute directly.
    DIFFUSE_CHECK(post == ops::Activation::none || !bias.defined(),
                  "linear: in_features == 0 with a fused activation and bias is not supported");
    if (bias.defined()) {
      out.copy_(f32_contiguous(bias));
    } else {
      out.fill_(0.0);
    }
    return out;
  }

  Tensor src = x;
  if (src.dtype() != compute) {
    src = src.to(compute);
  } else if (!rows_in_place(src)) {
    src = src.contiguous();
  }
  const auto dt = dnnl_type(compute);
  const memory::desc src_md({m, k}, dt, {k, 1});
  const memory::desc wei_any({k, n}, dt, memory::format_tag::any);
  const memory::desc bias_md({1, n}, memory::data_type::f32, {n, 1});
  const memory::desc dst_md({m, n}, memory::data_type::f32, {n, 1});

  std::ostringstream key;
  key << "linear|" << m << '|' << k << '|' << n << '|' << static_cast<int>(compute) << '|'
      << bias.defined() << '|' << static_cast<int>(post);
  auto prim = matmul_cache().get(key.str(), [&] {
    auto attr = make_attr(post);
    if (bias.defined()) {
      return dnnl::matmul::primitive_desc(dnnl::matmul::desc(src_md, wei_any, bias_md, dst_md),
                                          attr, engine());
    }
    return dnnl::matmul::primitive_desc(dnnl::matmul::desc(src_md, wei_any, dst_md), attr,
                                        engine());
  });

  // The weight [N, K] row-major is the matrix [K, N] with strides {1, K}.
  const memory::desc wei_layout = prim->pd.weights_desc();
  const memory::desc wei_user({k, n}, dt, {1, k});
  const memory wei_mem = weight_memory(weight, compute, 0, wei_layout, wei_user);

  std::unordered_map<int, memory> args{{DNNL_ARG_SRC, wrap(src_md, src)},
                                       {DNNL_ARG_WEIGHTS, wei_mem},
                                       {DNNL_ARG_DST, wrap(dst_md, out)}};
  Tensor bias32;
  if (bias.defined()) {
    bias32 = f32_contiguous(bias);
    args.emplace(DNNL_ARG_BIAS, wrap(bias_md, bias32));
  }
  prim->prim.execute(stream(), args);
  stream().wait();
  return out;
}

}  // namespace

Tensor dnnl_linear(const Tensor& x, const Tensor& weight, const Tensor& bias, DType compute,
                   ops::Activation post) {
  return linear_impl(x, WeightArg{&weight, nullptr}, bias, compute, post);
}

Tensor dnnl_linear(const Tensor& x, const DnnlWeight& weight, const Tensor& bias, DType compute,
                   ops::Activation post) {
  return linear_impl(x, WeightArg{nullptr, &weight}, bias, compute, post);
}

// --- matmul ------------------------------------------------------------------------------------

namespace {

// oneDNN view of one operand broadcast to `batch` (+ its last two dims): dims are 1 where the
// operand broadcasts, strides are the tensor's own. Copies only when the last two dims have no
// unit stride or a matrix dim has stride 0.
struct Operand {
  Tensor t;
  Dims dims;
  Dims strides;
};

Operand describe_operand(Tensor t, const Shape& batch, DType compute) {
  if (t.dtype() != compute) t = t.to(compute);
  const int64_t r = t.size(-2), c = t.size(-1);
  if ((t.stride(-1) != 1 && t.stride(-2) != 1) || (r > 1 && t.stride(-2) == 0) ||
      (c > 1 && t.stride(-1) == 0) || (t.stride(-1) != 1 && c == 1 && t.stride(-2) != 1)) {
    t = t.contiguous();
  }
  Operand op;
  const int64_t nb = static_cast<int64_t>(batch.size());
  const int64_t lead = nb - (t.dim() - 2);
  op.dims.assign(static_cast<std::size_t>(nb + 2), 1);
  op.strides.assign(static_cast<std::size_t>(nb + 2), 0);
  op.dims[nb] = r;
  op.dims[nb + 1] = c;
  // Size-1 matrix dims: any stride is valid; give them the neighbour's so the layout looks plain.
  op.strides[nb + 1] = c == 1 ? (r == 1 ? 1 : (t.stride(-2) == 1 ? r : 1)) : t.stride(-1);
  op.strides[nb] = r == 1 ? (op.strides[nb + 1] == 1 ? c : 1) : t.stride(-2);
  if (c == 1 && r > 1) op.strides[nb + 1] = op.strides[nb] == 1 ? r : 1;
  // Batch dims: extent 1 (broadcast) when the operand has extent 1 or stride 0.
  int64_t span = 1;  // a stride past everything inside, used for broadcast dims
  for (int64_t d = nb + 1; d >= nb; --d) span = std::max(span, op.strides[d] * op.dims[d]);
  for (int64_t d = nb - 1; d >= 0; --d) {
    const int64_t td = d - lead;
    const bool real = td >= 0 && t.size(td) != 1 && t.stride(td) != 0;
    if (real) {
      op.dims[d] = t.size(td);
      op.strides[d] = t.stride(td);
      span = std::max(span, op.strides[d] * op.dims[d]);
    } else {
      op.dims[d] = 1;
      op.strides[d] = span;
    }
  }
  op.t = t;
  return op;
}

}  // namespace

Tensor dnnl_matmul(const Tensor& a, const Tensor& b, DType compute) {
  const int64_t m = a.size(-2), k = a.size(-1), n = b.size(-1);
  Shape batch_a(a.shape().begin(), a.shape().end() - 2);
  Shape batch_b(b.shape().begin(), b.shape().end() - 2);
  // Broadcast batch shape (already validated by the ops layer).
  const std::size_t nb = std::max(batch_a.size(), batch_b.size());
  Shape batch(nb, 1);
  for (std::size_t i = 0; i < nb; ++i) {
    const int64_t da = i + batch_a.size() >= nb ? batch_a[i + batch_a.size() - nb] : 1;
    const int64_t db = i + batch_b.size() >= nb ? batch_b[i + batch_b.size() - nb] : 1;
    batch[i] = da == 1 ? db : da;
  }
  Shape out_shape = batch;
  out_shape.push_back(m);
  out_shape.push_back(n);
  Tensor out = Tensor::empty(out_shape, DType::f32);
  if (out.numel() == 0) return out;
  if (k == 0) {
    out.fill_(0.0);
    return out;
  }
  Operand oa = describe_operand(a, batch, compute);
  Operand ob = describe_operand(b, batch, compute);
  Dims dst_dims(out_shape.begin(), out_shape.end());
  Dims dst_strides(out.strides().begin(), out.strides().end());
  const auto dt = dnnl_type(compute);
  const memory::desc a_md(oa.dims, dt, oa.strides);
  const memory::desc b_md(ob.dims, dt, ob.strides);
  const memory::desc c_md(dst_dims, memory::data_type::f32, dst_strides);

  std::ostringstream key;
  key << "matmul|" << static_cast<int>(compute);
  put_dims(key, oa.dims);
  put_dims(key, oa.strides);
  put_dims(key, ob.dims);
  put_dims(key, ob.strides);
  put_dims(key, dst_dims);
  auto prim = matmul_cache().get(key.str(), [&] {
    return dnnl::matmul::primitive_desc(dnnl::matmul::desc(a_md, b_md, c_md), engine());
  });
  prim->prim.execute(stream(), {{DNNL_ARG_SRC, wrap(a_md, oa.t)},
                                {DNNL_ARG_WEIGHTS, wrap(b_md, ob.t)},
                                {DNNL_ARG_DST, wrap(c_md, out)}});
  stream().wait();
  return out;
}

// --- conv2d ------------------------------------------------------------------------------------
//
// Layouts: the source and destination are described with format_tag::any, so oneDNN picks its
// fastest layout (nChw16c-style blocked, or NHWC for its brgemm convolutions). The NCHW input is
// then converted by ONE pass that also casts to the compute dtype (a bf16 convolution needs that
// cast anyway), and the f32 result by ONE pass into the NCHW output. When the primitive accepts
// plain NCHW (e.g. few input channels) the tensor is used in place with no reorder at all.
//
// Bands: when the primitive takes NHWC and the output is large (the VAE decoder at 256x256 and
// 512x512: 128 to 256 MB per tensor), the convolution runs as bands of output rows instead, each
// through a primitive on just the input rows it reads. Each band's input is converted from the
// NCHW source into a small NHWC buffer and its output transposed into its rows of the NCHW
// result, so the whole-tensor NHWC copies of input and output (and their page faults) are never
// made, and each band's temporaries stay in cache. Two producers of the input are fused into
// that conversion, whatever the size: a nearest 2x upsampling (DnnlConvParams::upsample2x, read
// from the low-resolution source) and a group norm with its activation (in_scale / in_shift,
// applied to the band's rows by the group norm kernel's own apply step), so neither the
// upsampled nor the normalized tensor is ever materialized. Every output pixel sums the same
// products as in the whole convolution; only the order of the f32 accumulation may differ (it
// does not for the brgemm convolutions of the SD 1.5 UNet and VAE: their outputs are
// bit-identical either way).

namespace {

using ConvPD = dnnl::convolution_forward::primitive_desc;

// Below min_output_bytes of f32 output a convolution runs whole; a band holds about
// bytes_per_thread of f32 output per thread (its temporaries then fit in the caches).
std::atomic<int64_t> g_band_min_output_bytes{int64_t{24} << 20};
std::atomic<int64_t> g_band_bytes_per_thread{int64_t{1} << 20};
std::atomic<std::size_t> g_banded_convolutions{0};

struct ConvShape {
  int64_t n, c, h, w;  // the convolution's input (after the fused upsampling, if any)
  int64_t o, kh, kw, g;
  int64_t ho, wo;
};

ConvPD make_conv_pd(const memory::desc& src, const memory::desc& wei, const memory::desc& dst,
                    bool has_bias, const DnnlConvParams& p, const Dims& pad_l, const Dims& pad_r) {
  const memory::desc bias_md({dst.dims()[1]}, memory::data_type::f32, memory::format_tag::a);
  const Dims strides{p.stride[0], p.stride[1]};
  const Dims dilates{p.dilation[0] - 1, p.dilation[1] - 1};  // oneDNN counts the gaps
  const auto attr = make_attr(p.post);
  const auto alg = dnnl::algorithm::convolution_direct;
  const auto kind = dnnl::prop_kind::forward_inference;
  if (has_bias) {
    return ConvPD(dnnl::convolution_forward::desc(kind, alg, src, wei, bias_md, dst, strides,
                                                  dilates, pad_l, pad_r),
                  attr, engine());
  }
  return ConvPD(
      dnnl::convolution_forward::desc(kind, alg, src, wei, dst, strides, dilates, pad_l, pad_r),
      attr, engine());
}

std::string conv_key(const char* kind, const ConvShape& s, const DnnlConvParams& p,
                     const Dims& pad_l, const Dims& pad_r, DType compute, bool has_bias) {
  std::ostringstream key;
  key << kind << '|' << s.n << ',' << s.c << ',' << s.h << ',' << s.w << '|' << s.o << ',' << s.kh
      << ',' << s.kw << '|' << s.g << '|' << p.stride[0] << ',' << p.stride[1] << '|' << pad_l[0]
      << ',' << pad_l[1] << ',' << pad_r[0] << ',' << pad_r[1] << '|' << p.dilation[0] << ','
      << p.dilation[1] << '|' << static_cast<int>(compute) << '|' << has_bias << '|'
      << static_cast<int>(p.post);
  return key.str();
}

// Applies p's input transform (a fused group norm) to rows [row0, row0 + rows) of every plane of
// the contiguous f32 `src` [n][c][h][w], into dst [n][c][rows][w].
void transform_rows(const float* src, int64_t n, int64_t c, int64_t h, int64_t w, int64_t row0,
                    int64_t rows, const DnnlConvParams& p, float* dst) {
  const SimdKernels& k = simd();
  const int act = activation_code(p.in_act);
  const int64_t len = rows * w;
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < n; ++b) {
    for (int64_t ch = 0; ch < c; ++ch) {
      const int64_t plane = b * c + ch;
      k.affine_act(src + plane * h * w + row0 * w, dst + plane * len, len, p.in_scale[plane],
                   p.in_shift[plane], act);
    }
  }
}

// Convolutions whose band primitives were found unusable (keyed by the whole convolution's
// primitive key and the band height), so that they are not tried again.
class DeclinedBands {
 public:
  bool contains(const std::string& key) {
    std::lock_guard<std::mutex> lock(mu_);
    return keys_.count(key) != 0;
  }
  void add(const std::string& key) {
    std::lock_guard<std::mutex> lock(mu_);
    if (keys_.size() >= 1024) keys_.clear();
    keys_.insert(key);
  }

 private:
  std::mutex mu_;
  std::unordered_set<std::string> keys_;
};

DeclinedBands& declined_bands() {
  static DeclinedBands d;
  return d;
}

// `src` is f32 with unit-stride rows; with p.upsample2x it is the source of the upsampling (half
// the height and width of s.h, s.w). `whole_key` / `whole` are the primitive of the whole
// convolution. Returns false, having done nothing, when the bands cannot run with that
// primitive's implementation and one weight layout for all bands.
bool conv2d_bands(const Tensor& src, const WeightArg& weight, const Tensor& bias32,
                  const DnnlConvParams& p, DType compute, const ConvShape& s,
                  const std::string& whole_key, const ConvPD& whole, const memory::desc& wei_user,
                  Tensor& out) {
  const auto dt = dnnl_type(compute);
  const int64_t span = p.dilation[0] * (s.kh - 1) + 1;  // input rows one output row reads
  const int64_t row_bytes = s.n * s.o * s.wo * static_cast<int64_t>(sizeof(float));
  const int64_t rows = std::clamp<int64_t>(
      g_band_bytes_per_thread.load() * std::max(1, diffuse::num_threads()) / row_bytes, 1, s.ho);
  const std::string declined_key = whole_key + "|rows " + std::to_string(rows);
  if (declined_bands().contains(declined_key)) return false;

  struct Band {
    int64_t r0, r1;  // output rows
    int64_t i0, i1;  // input rows read
    Dims pad_l, pad_r;
    std::shared_ptr<const CachedPrimitive<ConvPD>> prim;
  };
  std::vector<Band> bands;
  int64_t max_in_rows = 0;
  for (int64_t r0 = 0; r0 < s.ho; r0 += rows) {
    Band b;
    b.r0 = r0;
    b.r1 = std::min(s.ho, r0 + rows);
    const int64_t begin = b.r0 * p.stride[0] - p.padding[0];
    const int64_t end = (b.r1 - 1) * p.stride[0] - p.padding[0] + span;
    b.i0 = std::max<int64_t>(begin, 0);
    b.i1 = std::min(end, s.h);
    if (b.i1 <= b.i0) {  // a band entirely in the padding (padding larger than the kernel)
      declined_bands().add(declined_key);
      return false;
    }
    b.pad_l = {b.i0 - begin, p.padding[1]};
    b.pad_r = {end - b.i1, p.padding[1]};
    max_in_rows = std::max(max_in_rows, b.i1 - b.i0);
    bands.push_back(std::move(b));
  }

  // One weight layout for every band: the one oneDNN picks for a typical (middle) band; the
  // first and last bands (other heights and paddings) are asked to take it too.
  const std::size_t typical = bands.size() / 2;
  const auto band_shape = [&](const Band& b) {
    ConvShape bs = s;
    bs.h = b.i1 - b.i0;
    bs.ho = b.r1 - b.r0;
    return bs;
  };
  const ConvShape ts = band_shape(bands[typical]);
  const std::string typical_key = conv_key("conv-band", ts, p, bands[typical].pad_l,
                                           bands[typical].pad_r, compute, bias32.defined());
  const std::string whole_impl = whole.impl_info_str();
  try {
    const auto typical_prim = conv_cache().get(typical_key, [&] {
      const memory::desc src_md({ts.n, ts.c, ts.h, ts.w}, dt, memory::format_tag::nhwc);
      const memory::desc wei_any({s.o, s.c, s.kh, s.kw}, dt, memory::format_tag::any);
      const memory::desc dst_md({ts.n, ts.o, ts.ho, ts.wo}, memory::data_type::f32,
                                memory::format_tag::nhwc);
      return make_conv_pd(src_md, wei_any, dst_md, bias32.defined(), p, bands[typical].pad_l,
                          bands[typical].pad_r);
    });
    const memory::desc wei_layout = typical_prim->pd.weights_desc();
    for (Band& b : bands) {
      const ConvShape bs = band_shape(b);
      b.prim = conv_cache().get(
          conv_key("conv-band", bs, p, b.pad_l, b.pad_r, compute, bias32.defined()) + "|like " +
              typical_key,
          [&] {
            const memory::desc src_md({bs.n, bs.c, bs.h, bs.w}, dt, memory::format_tag::nhwc);
            const memory::desc dst_md({bs.n, bs.o, bs.ho, bs.wo}, memory::data_type::f32,
                                      memory::format_tag::nhwc);
            return make_conv_pd(src_md, wei_layout, dst_md, bias32.defined(), p, b.pad_l, b.pad_r);
          });
      if (b.prim->pd.impl_info_str() != whole_impl || b.prim->pd.weights_desc() != wei_layout) {
        declined_bands().add(declined_key);
        return false;
      }
    }
  } catch (const dnnl::error&) {  // no implementation takes that weight layout for some band
    declined_bands().add(declined_key);
    return false;
  }

  const memory wei_mem =
      weight_memory(weight, compute, 1, bands.front().prim->pd.weights_desc(), wei_user);
  const DType buf_dtype = compute == DType::bf16 ? DType::bf16 : DType::f32;
  const Tensor in_buf = Tensor::empty({s.n * max_in_rows * s.w * s.c}, buf_dtype);
  const bool transform = !p.in_scale.empty();
  const Tensor normed = transform ? Tensor::empty({s.n * s.c * max_in_rows * s.w}) : Tensor();
  const Tensor out_buf = Tensor::empty({s.n * rows * s.wo * s.o}, DType::f32);
  const bool to_bf16 = compute == DType::bf16;
  const memory::desc bias_md({s.o}, memory::data_type::f32, memory::format_tag::a);
  for (const Band& b : bands) {
    const int64_t in_rows = b.i1 - b.i0;
    if (p.upsample2x) {
      nchw_to_nhwc_up2(src.data<float>(), s.n, s.c, s.w / 2, src.stride(0), src.stride(1), b.i0,
                       in_rows, in_buf.data_ptr(), to_bf16);
    } else if (transform) {
      transform_rows(src.data<float>(), s.n, s.c, s.h, s.w, b.i0, in_rows, p, normed.data<float>());
      nchw_to_nhwc(normed.data<float>(), s.n, s.c, in_rows * s.w, s.c * in_rows * s.w,
                   in_rows * s.w, in_buf.data_ptr(), to_bf16);
    } else {
      nchw_to_nhwc(src.data<float>() + b.i0 * s.w, s.n, s.c, in_rows * s.w, src.stride(0),
                   src.stride(1), in_buf.data_ptr(), to_bf16);
    }
    memory src_mem(b.prim->pd.src_desc(), engine(), in_buf.data_ptr());
    memory dst_mem(b.prim->pd.dst_desc(), engine(), out_buf.data_ptr());
    std::unordered_map<int, memory> args{
        {DNNL_ARG_SRC, src_mem}, {DNNL_ARG_WEIGHTS, wei_mem}, {DNNL_ARG_DST, dst_mem}};
    if (bias32.defined()) args.emplace(DNNL_ARG_BIAS, wrap(bias_md, bias32));
    b.prim->prim.execute(stream(), args);
    stream().wait();
    nhwc_to_nchw(out_buf.data<float>(), s.n, s.o, (b.r1 - b.r0) * s.wo,
                 out.data<float>() + b.r0 * s.wo, s.o * s.ho * s.wo, s.ho * s.wo);
  }
  g_banded_convolutions.fetch_add(1);
  return true;
}

Tensor conv2d_impl(const Tensor& x, const WeightArg& weight, const Tensor& bias,
                   const DnnlConvParams& p, DType compute) {
  DIFFUSE_ASSERT(p.in_scale.empty() ||
                 (!p.upsample2x && x.dtype() == DType::f32 && x.is_contiguous() &&
                  static_cast<int64_t>(p.in_scale.size()) == x.size(0) * x.size(1) &&
                  p.in_shift.size() == p.in_scale.size()));
  const int64_t up = p.upsample2x ? 2 : 1;
  ConvShape s{};
  s.n = x.size(0);
  s.c = x.size(1);
  s.h = x.size(2) * up;
  s.w = x.size(3) * up;
  s.o = weight.size(0);
  s.kh = weight.size(2);
  s.kw = weight.size(3);
  s.g = p.groups;
  s.ho = (s.h + 2 * p.padding[0] - p.dilation[0] * (s.kh - 1) - 1) / p.stride[0] + 1;
  s.wo = (s.w + 2 * p.padding[1] - p.dilation[1] * (s.kw - 1) - 1) / p.stride[1] + 1;
  const int64_t n = s.n, c = s.c, h = s.h, w = s.w, o = s.o, g = s.g, ho = s.ho, wo = s.wo;
  Tensor out = Tensor::empty({n, o, ho, wo}, DType::f32);
  if (out.numel() == 0) return out;

  Tensor src = x.dtype() == DType::f32 ? x : x.to(DType::f32);
  // oneDNN memory descriptors reject zero (broadcast) strides.
  if (std::any_of(src.strides().begin(), src.strides().end(), [](int64_t st) { return st <= 0; })) {
    src = src.clone();  // clone(), not contiguous(): size-1 dims must get plain strides too
  }
  const auto dt = dnnl_type(compute);
  const memory::desc dst_user({n, o, ho, wo}, memory::data_type::f32, memory::format_tag::nchw);
  const Dims wdims = g == 1 ? Dims{o, c, s.kh, s.kw} : Dims{g, o / g, c / g, s.kh, s.kw};
  const memory::desc src_any({n, c, h, w}, dt, memory::format_tag::any);
  const memory::desc wei_any(wdims, dt, memory::format_tag::any);
  const memory::desc dst_any({n, o, ho, wo}, memory::data_type::f32, memory::format_tag::any);
  const Dims pad{p.padding[0], p.padding[1]};

  const std::string key = conv_key("conv", s, p, pad, pad, compute, bias.defined());
  auto prim = conv_cache().get(
      key, [&] { return make_conv_pd(src_any, wei_any, dst_any, bias.defined(), p, pad, pad); });
  const memory::desc wei_layout = prim->pd.weights_desc();
  const memory::desc wei_user(wdims, dt,
                              g == 1 ? memory::format_tag::oihw : memory::format_tag::goihw);
  Tensor bias32;
  if (bias.defined()) bias32 = f32_contiguous(bias);

  // Bands, when the primitive works in NHWC and the output is large, or to fuse the upsampling.
  const bool fast = fast_layout_available();
  const memory::desc nhwc({n, c, h, w}, dt, memory::format_tag::nhwc);
  const memory::desc dst_nhwc({n, o, ho, wo}, memory::data_type::f32, memory::format_tag::nhwc);
  const bool rows_contiguous = src.stride(3) == 1 && src.stride(2) == src.size(3);
  const int64_t band_min = g_band_min_output_bytes.load();
  if (band_min >= 0 && fast && g == 1 && rows_contiguous && prim->pd.src_desc() == nhwc &&
      prim->pd.dst_desc() == dst_nhwc &&
      (p.upsample2x || !p.in_scale.empty() ||
       out.numel() * static_cast<int64_t>(sizeof(float)) >= band_min) &&
      conv2d_bands(src, weight, bias32, p, compute, s, key, prim->pd, wei_user, out)) {
    return out;
  }
  if (p.upsample2x) {
    Tensor upsampled = Tensor::empty({n, c, h, w}, DType::f32);
    upsample_nearest(src, upsampled, 0.5f, 0.5f);
    src = upsampled;
  } else if (!p.in_scale.empty()) {
    Tensor normed = Tensor::empty({n, c, h, w}, DType::f32);
    transform_rows(src.data<float>(), n, c, h, w, 0, h, p, normed.data<float>());
    src = normed;
  }

  // Source: in place when the primitive takes this exact layout, else one conversion (+cast):
  // our tiled NCHW -> NHWC transpose for the NHWC layout brgemm convolutions pick (about twice
  // as fast as oneDNN's generic reorder here), a oneDNN reorder for any other layout.
  const memory::desc src_user({n, c, h, w}, memory::data_type::f32,
                              Dims(src.strides().begin(), src.strides().end()));
  memory src_mem = wrap(src_user, src);
  if (prim->pd.src_desc() != src_user) {
    memory converted(prim->pd.src_desc(), engine());
    if (fast && prim->pd.src_desc() == nhwc && src.stride(3) == 1 && src.stride(2) == w) {
      nchw_to_nhwc(src.data<float>(), n, c, h * w, src.stride(0), src.stride(1),
                   converted.get_data_handle(), compute == DType::bf16);
    } else {
      dnnl::reorder(src_mem, converted).execute(stream(), src_mem, converted);
    }
    src_mem = converted;
  }
  // Weights: in the primitive's layout.
  const memory wei_mem = weight_memory(weight, compute, 1, wei_layout, wei_user);
  memory out_user = wrap(dst_user, out);
  const bool dst_in_place = prim->pd.dst_desc() == dst_user;
  memory dst_mem = dst_in_place ? out_user : memory(prim->pd.dst_desc(), engine());

  std::unordered_map<int, memory> args{
      {DNNL_ARG_SRC, src_mem}, {DNNL_ARG_WEIGHTS, wei_mem}, {DNNL_ARG_DST, dst_mem}};
  if (bias.defined()) {
    const memory::desc bias_md({o}, memory::data_type::f32, memory::format_tag::a);
    args.emplace(DNNL_ARG_BIAS, wrap(bias_md, bias32));
  }
  prim->prim.execute(stream(), args);
  if (dst_in_place) {
    stream().wait();
  } else if (fast && prim->pd.dst_desc() == dst_nhwc) {
    stream().wait();
    nhwc_to_nchw(static_cast<const float*>(dst_mem.get_data_handle()), n, o, ho * wo,
                 out.data<float>(), o * ho * wo, ho * wo);
  } else {
    dnnl::reorder(dst_mem, out_user).execute(stream(), dst_mem, out_user);
    stream().wait();
  }
  return out;
}

}  // namespace

Tensor dnnl_conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias,
                   const DnnlConvParams& p, DType compute) {
  return conv2d_impl(x, WeightArg{&weight, nullptr}, bias, p, compute);
}

Tensor dnnl_conv2d(const Tensor& x, const DnnlWeight& weight, const Tensor& bias,
                   const DnnlConvParams& p, DType compute) {
  return conv2d_impl(x, WeightArg{nullptr, &weight}, bias, p, compute);
}

DnnlConvBanding dnnl_conv_banding() {
  return {g_band_min_output_bytes.load(), g_band_bytes_per_thread.load()};
}

void set_dnnl_conv_banding(const DnnlConvBanding& banding) {
  DIFFUSE_CHECK(banding.bytes_per_thread > 0, "conv banding: bytes_per_thread must be positive");
  g_band_min_output_bytes.store(banding.min_output_bytes);
  g_band_bytes_per_thread.store(banding.bytes_per_thread);
}

std::size_t dnnl_banded_conv_count() {
  return g_banded_convolutions.load();
}

void dnnl_clear_caches() {
  matmul_cache().clear();
  conv_cache().clear();
  weight_cache().clear();
}

std::size_t dnnl_cached_weight_count() {
  return weight_cache().size();
}

}  // namespace diffuse::cpu
