// attention: argument checks, then dispatch to the CPU backend's flash-attention kernel.
#include "diffuse/ops/attention.h"

#include <cmath>

#include "diffuse/ops/broadcast.h"
#include "src/backends/cpu/attention_cpu.h"

namespace diffuse::ops {
namespace {

bool is_float(DType t) {
  return t == DType::f32 || t == DType::f16 || t == DType::bf16 || t == DType::f64;
}

}  // namespace

Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionOptions& o,
                 DType compute) {
  DIFFUSE_CHECK(q.defined() && k.defined() && v.defined(), "attention: q, k and v must be defined");
  DIFFUSE_CHECK(compute == DType::f32 || compute == DType::bf16,
                "attention: compute dtype must be f32 or bf16, got ", dtype_name(compute));
  for (const Tensor* t : {&q, &k, &v, &o.mask}) {
    DIFFUSE_CHECK(!t->defined() || t->device().type == DeviceType::cpu, "attention: input on ",
                  t->device().str(), "; only the CPU backend is available");
  }
  DIFFUSE_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4,
                "attention: q, k, v must be [B, H, L, D], got q ", shape_str(q.shape()), ", k ",
                shape_str(k.shape()), ", v ", shape_str(v.shape()));
  DIFFUSE_CHECK(is_float(q.dtype()) && is_float(k.dtype()) && is_float(v.dtype()),
                "attention: q, k, v must be floating point, got ", dtype_name(q.dtype()), ", ",
                dtype_name(k.dtype()), ", ", dtype_name(v.dtype()));
  const int64_t b = q.size(0), h = q.size(1), lq = q.size(2), d = q.size(3), lk = k.size(2);
  DIFFUSE_CHECK(k.size(0) == b && k.size(1) == h && k.size(3) == d && v.size(0) == b &&
                    v.size(1) == h && v.size(2) == lk,
                "attention: shapes do not match: q ", shape_str(q.shape()), ", k ",
                shape_str(k.shape()), ", v ", shape_str(v.shape()),
                " (expected k [B, H, Lk, D] and v [B, H, Lk, Dv])");
  const double scale = o.scale ? *o.scale : 1.0 / std::sqrt(static_cast<double>(d));
  DIFFUSE_CHECK(std::isfinite(scale), "attention: scale must be finite, got ", scale);
  Tensor mask;
  if (o.mask.defined()) {
    DIFFUSE_CHECK(o.mask.dtype() == DType::boolean || is_float(o.mask.dtype()),
                  "attention: mask must be bool or floating point, got ",
                  dtype_name(o.mask.dtype()));
    DIFFUSE_CHECK(o.mask.dim() <= 4, "attention: mask ", shape_str(o.mask.shape()),
                  " has more than 4 dims");
    const Shape target{b, h, lq, lk};
    const Shape joint = broadcast_shapes(o.mask.shape(), target, "attention (mask)");
    DIFFUSE_CHECK(joint == target, "attention: mask ", shape_str(o.mask.shape()),
                  " does not broadcast to the scores ", shape_str(target));
    mask = o.mask.expand(target);
  }
  return cpu::attention_cpu(q, k, v, mask, scale, o.is_causal, compute);
}

}  // namespace diffuse::ops
