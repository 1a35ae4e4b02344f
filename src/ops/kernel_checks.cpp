#include "src/ops/kernel_checks.h"

#include "src/backends/cpu/strided.h"

namespace diffuse::ops::detail {

void check_defined(const Tensor& t, const char* op, const char* what) {
  DIFFUSE_CHECK(t.defined(), op, ": ", what, " is an undefined tensor");
}

void check_floating(const Tensor& t, const char* op, bool allow_f64) {
  const DType d = t.dtype();
  const bool ok =
      d == DType::f32 || d == DType::f16 || d == DType::bf16 || (allow_f64 && d == DType::f64);
  DIFFUSE_CHECK(ok, op, ": expected a ", allow_f64 ? "f32, f16, bf16 or f64" : "f32, f16 or bf16",
                " tensor, got ", t.str());
}

void check_same_dtype(const Tensor& a, const Tensor& b, const char* op) {
  DIFFUSE_CHECK(a.dtype() == b.dtype(), op, ": dtypes differ (", dtype_name(a.dtype()), " ",
                shape_str(a.shape()), " vs ", dtype_name(b.dtype()), " ", shape_str(b.shape()),
                "); convert one operand with .to() first");
}

Device check_device(std::initializer_list<const Tensor*> tensors, const char* op) {
  Device device = Device::cpu();
  bool first = true;
  for (const Tensor* t : tensors) {
    if (!t->defined()) continue;
    if (first) {
      device = t->device();
      first = false;
    }
    DIFFUSE_CHECK(t->device() == device, op, ": tensors on different devices (", device.str(),
                  " and ", t->device().str(), ")");
  }
  DIFFUSE_CHECK(device.type == DeviceType::cpu, op, ": no kernel for device ", device.str(),
                " in this build");
  return device;
}

void check_rank(const Tensor& t, const char* op) {
  DIFFUSE_CHECK(t.dim() <= cpu::kMaxDims, op, ": tensors of rank ", t.dim(),
                " are not supported (at most ", cpu::kMaxDims, "), got ", t.str());
}

}  // namespace diffuse::ops::detail
