// Helpers of the naive references for the elementwise, activation, norm, shape, reduce and
// embedding ops (private to src/ops/ref).
#pragma once

#include <cstdint>
#include <vector>

#include "diffuse/core/tensor.h"
#include "diffuse/ops/activation_kind.h"

namespace diffuse::ops::ref::detail {

// NumPy broadcast of two shapes (throws diffuse::Error naming `op` when incompatible).
Shape broadcast(const Shape& a, const Shape& b, const char* op);
// Row-major multi-index of linear index `i` in `shape`.
std::vector<int64_t> unravel(int64_t i, const Shape& shape);
// Linear index of a multi-index in a contiguous `shape`.
int64_t ravel(const std::vector<int64_t>& idx, const Shape& shape);
// A Python number as the op's compute type sees it: rounded to f32 unless the tensor is f64.
double as_compute(double v, DType dtype);
// The activation's defining formula in double (ref_activation.cpp).
double activation_of(Activation kind, double v);

}  // namespace diffuse::ops::ref::detail
