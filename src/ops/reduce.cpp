// Reductions: argument checks and dispatch to the device's kernels.
#include "diffuse/ops/reduce.h"

#include "src/backends/cpu/kernels.h"
#include "src/ops/kernel_checks.h"

namespace diffuse::ops {
namespace {

Tensor reduce_op(const char* name, cpu::ReduceOp op, const Tensor& x, int64_t dim,
                 int64_t correction, bool keepdim) {
  detail::check_defined(x, name, "the input");
  detail::check_device({&x}, name);
  detail::check_floating(x, name);
  DIFFUSE_CHECK(x.dim() >= 1 && dim >= -x.dim() && dim < x.dim(), name, ": dim ", dim,
                " is out of range for x ", shape_str(x.shape()));
  const int64_t d = x.wrap_dim(dim);
  DIFFUSE_CHECK(op != cpu::ReduceOp::max || x.size(d) > 0, name,
                ": cannot take the maximum over an empty dim ", d, " of x ", shape_str(x.shape()));
  Shape shape = x.shape();
  shape.erase(shape.begin() + d);
  Tensor out = Tensor::empty(shape, x.dtype());
  if (out.numel() > 0) cpu::reduce(op, x.contiguous(), d, correction, out);
  return keepdim ? out.unsqueeze(d) : out;
}

}  // namespace

Tensor sum(const Tensor& x, int64_t dim, bool keepdim) {
  return reduce_op("sum", cpu::ReduceOp::sum, x, dim, 0, keepdim);
}
Tensor mean(const Tensor& x, int64_t dim, bool keepdim) {
  return reduce_op("mean", cpu::ReduceOp::mean, x, dim, 0, keepdim);
}
Tensor var(const Tensor& x, int64_t dim, int64_t correction, bool keepdim) {
  return reduce_op("var", cpu::ReduceOp::var, x, dim, correction, keepdim);
}
Tensor max(const Tensor& x, int64_t dim, bool keepdim) {
  return reduce_op("max", cpu::ReduceOp::max, x, dim, 0, keepdim);
}

}  // namespace diffuse::ops
