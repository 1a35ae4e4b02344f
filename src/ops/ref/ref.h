// Naive reference implementations of every op: double-precision accumulation, no
// vectorization, no threads. They are the executable specification the backends are tested
// against (tests/ops). Each takes the same arguments as the public op and returns its result in
// the dtype the public op would.
#pragma once

#include <vector>

#include "diffuse/core/tensor.h"

namespace diffuse::ops::ref {

// All elements of `t` in row-major order as double.
std::vector<double> to_double(const Tensor& t);
// A new contiguous tensor of `dtype` from row-major doubles.
Tensor from_double(const std::vector<double>& values, const Shape& shape, DType dtype);

}  // namespace diffuse::ops::ref
