// oneDNN matmul / convolution with two caches:
//  - primitives, keyed by (op, shapes, strides, dtypes, attributes), so a shape seen before costs
//    no primitive creation;
//  - weights, converted to the compute dtype and reordered into the layout the primitive picked
//    with format_tag::any, keyed by (storage address, offset, shape, strides, dtype, compute,
//    chosen layout). An entry holds a weak_ptr to the storage: a lookup only hits while that
//    storage is alive (a new storage at a recycled address never aliases a dead one), and every
//    call sweeps out entries whose storage has died, so a freed weight's copy is released at the
//    next linalg call at the latest.
#include "src/backends/cpu/dnnl_linalg.h"

#include <algorithm>
#include <map>
#include <memory>
#include <mutex>
#include <oneapi/dnnl/dnnl.hpp>
#include <sstream>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "src/backends/cpu/dnnl_layout.h"

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

}  // namespace

// --- linear ------------------------------------------------------------------------------------

Tensor dnnl_linear(const Tensor& x, const Tensor& weight, const Tensor& bias, DType compute,
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
  memory wei_mem;
  const memory::desc wei_user({k, n}, dt, {1, k});
  if (weight.dtype() == compute && weight.is_contiguous() && wei_layout == wei_user) {
    wei_mem = wrap(wei_user, weight);  // already usable: no copy at all
  } else {
    wei_mem = weight_cache().get(weight, compute, 0, wei_layout, [&] {
      Tensor plain = weight.to(compute);
      return std::make_pair(wrap(wei_user, plain), plain);
    });
  }

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
// fastest layout (nChw16c-style blocked on AVX-512). The NCHW input is then converted by ONE
// reorder that also casts to the compute dtype (a bf16 convolution needs that cast anyway), and
// the blocked f32 result by ONE reorder into the NCHW output. When the primitive accepts plain
// NCHW (e.g. few input channels) the tensor is used in place with no reorder at all.

Tensor dnnl_conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias,
                   const DnnlConvParams& p, DType compute) {
  const int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  const int64_t o = weight.size(0), kh = weight.size(2), kw = weight.size(3);
  const int64_t g = p.groups;
  const int64_t ho = (h + 2 * p.padding[0] - p.dilation[0] * (kh - 1) - 1) / p.stride[0] + 1;
  const int64_t wo = (w + 2 * p.padding[1] - p.dilation[1] * (kw - 1) - 1) / p.stride[1] + 1;
  Tensor out = Tensor::empty({n, o, ho, wo}, DType::f32);
  if (out.numel() == 0) return out;

  Tensor src = x.dtype() == DType::f32 ? x : x.to(DType::f32);
  // oneDNN memory descriptors reject zero (broadcast) strides.
  if (std::any_of(src.strides().begin(), src.strides().end(), [](int64_t s) { return s <= 0; })) {
    src = src.clone();  // clone(), not contiguous(): size-1 dims must get plain strides too
  }
  const auto dt = dnnl_type(compute);
  const memory::desc src_user({n, c, h, w}, memory::data_type::f32,
                              Dims(src.strides().begin(), src.strides().end()));
  const memory::desc dst_user({n, o, ho, wo}, memory::data_type::f32, memory::format_tag::nchw);
  const Dims wdims = g == 1 ? Dims{o, c, kh, kw} : Dims{g, o / g, c / g, kh, kw};
  const memory::desc src_any({n, c, h, w}, dt, memory::format_tag::any);
  const memory::desc wei_any(wdims, dt, memory::format_tag::any);
  const memory::desc bias_md({o}, memory::data_type::f32, memory::format_tag::a);
  const memory::desc dst_any({n, o, ho, wo}, memory::data_type::f32, memory::format_tag::any);
  const Dims strides{p.stride[0], p.stride[1]};
  const Dims dilates{p.dilation[0] - 1, p.dilation[1] - 1};  // oneDNN counts the gaps
  const Dims pad{p.padding[0], p.padding[1]};

  std::ostringstream key;
  key << "conv|" << n << ',' << c << ',' << h << ',' << w << '|' << o << ',' << kh << ',' << kw
      << '|' << g << '|' << p.stride[0] << ',' << p.stride[1] << '|' << p.padding[0] << ','
      << p.padding[1] << '|' << p.dilation[0] << ',' << p.dilation[1] << '|'
      << static_cast<int>(compute) << '|' << bias.defined() << '|' << static_cast<int>(p.post);
  auto prim = conv_cache().get(key.str(), [&] {
    auto attr = make_attr(p.post);
    const auto alg = dnnl::algorithm::convolution_direct;
    const auto kind = dnnl::prop_kind::forward_inference;
    if (bias.defined()) {
      return dnnl::convolution_forward::primitive_desc(
          dnnl::convolution_forward::desc(kind, alg, src_any, wei_any, bias_md, dst_any, strides,
                                          dilates, pad, pad),
          attr, engine());
    }
    return dnnl::convolution_forward::primitive_desc(
        dnnl::convolution_forward::desc(kind, alg, src_any, wei_any, dst_any, strides, dilates, pad,
                                        pad),
        attr, engine());
  });

  // Source: in place when the primitive takes this exact layout, else one conversion (+cast):
  // our tiled NCHW -> NHWC transpose for the NHWC layout brgemm convolutions pick (about twice
  // as fast as oneDNN's generic reorder here), a oneDNN reorder for any other layout.
  const bool fast = fast_layout_available();
  memory src_mem = wrap(src_user, src);
  if (prim->pd.src_desc() != src_user) {
    memory converted(prim->pd.src_desc(), engine());
    const memory::desc nhwc({n, c, h, w}, dt, memory::format_tag::nhwc);
    if (fast && prim->pd.src_desc() == nhwc && src.stride(3) == 1 && src.stride(2) == w) {
      nchw_to_nhwc(src.data<float>(), n, c, h * w, src.stride(0), src.stride(1),
                   converted.get_data_handle(), compute == DType::bf16);
    } else {
      dnnl::reorder(src_mem, converted).execute(stream(), src_mem, converted);
    }
    src_mem = converted;
  }
  // Weights: cached in the primitive's layout.
  const memory::desc wei_layout = prim->pd.weights_desc();
  const memory::desc wei_user(wdims, dt,
                              g == 1 ? memory::format_tag::oihw : memory::format_tag::goihw);
  memory wei_mem;
  if (weight.dtype() == compute && weight.is_contiguous() && wei_layout == wei_user) {
    wei_mem = wrap(wei_user, weight);
  } else {
    wei_mem = weight_cache().get(weight, compute, 1, wei_layout, [&] {
      Tensor plain = weight.to(compute);
      return std::make_pair(wrap(wei_user, plain), plain);
    });
  }
  memory out_user = wrap(dst_user, out);
  const bool dst_in_place = prim->pd.dst_desc() == dst_user;
  memory dst_mem = dst_in_place ? out_user : memory(prim->pd.dst_desc(), engine());

  std::unordered_map<int, memory> args{
      {DNNL_ARG_SRC, src_mem}, {DNNL_ARG_WEIGHTS, wei_mem}, {DNNL_ARG_DST, dst_mem}};
  Tensor bias32;
  if (bias.defined()) {
    bias32 = f32_contiguous(bias);
    args.emplace(DNNL_ARG_BIAS, wrap(bias_md, bias32));
  }
  prim->prim.execute(stream(), args);
  const memory::desc dst_nhwc({n, o, ho, wo}, memory::data_type::f32, memory::format_tag::nhwc);
  if (dst_in_place) {
    stream().wait();
  } else if (fast && prim->pd.dst_desc() == dst_nhwc) {
    stream().wait();
    nhwc_to_nchw(static_cast<const float*>(dst_mem.get_data_handle()), n, o, ho * wo,
                 out.data<float>());
  } else {
    dnnl::reorder(dst_mem, out_user).execute(stream(), dst_mem, out_user);
    stream().wait();
  }
  return out;
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
