// Argument checks shared by the elementwise, activation, norm, shape, reduce and embedding ops
// (private to src/ops). Every failure is a diffuse::Error naming the op.
#pragma once

#include <initializer_list>

#include "diffuse/core/tensor.h"
#include "src/backends/cpu/kernels.h"

namespace diffuse::ops::detail {

// The tensor is defined (not a default-constructed Tensor).
void check_defined(const Tensor& t, const char* op, const char* what);
// f32, f16, bf16 or (when allow_f64) f64.
void check_floating(const Tensor& t, const char* op, bool allow_f64 = true);
// Same dtype for both operands (no implicit promotion).
void check_same_dtype(const Tensor& a, const Tensor& b, const char* op);
// All tensors on one device, and a device this build has kernels for (the CPU); returns it.
Device check_device(std::initializer_list<const Tensor*> tensors, const char* op);
// Rank within what the strided kernels handle (16).
void check_rank(const Tensor& t, const char* op);

// Checks x and runs one unary kernel into a new contiguous tensor (elementwise.cpp).
Tensor unary_op(const char* name, cpu::UnaryOp op, const Tensor& x, double p0, double p1);

}  // namespace diffuse::ops::detail
