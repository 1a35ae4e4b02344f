#include "src/ops/inplace.h"

#include "diffuse/ops/elementwise.h"
#include "src/backends/cpu/kernels.h"

namespace diffuse::ops {

Tensor add_into(Tensor a, const Tensor& b) {
  const bool reusable = a.defined() && b.defined() && a.storage().use_count() == 1 &&
                        a.device().type == DeviceType::cpu && b.device().type == DeviceType::cpu &&
                        !a.read_only() && a.is_contiguous() && a.dtype() == DType::f32 &&
                        b.dtype() == DType::f32 && a.shape() == b.shape() && a.numel() > 0;
  if (!reusable) return add(a, b);
  cpu::binary(cpu::BinaryOp::add, a, b, a);
  return a;
}

}  // namespace diffuse::ops
