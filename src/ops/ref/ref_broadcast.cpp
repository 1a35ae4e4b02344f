// Reference-side helpers shared by the naive implementations.
#include "src/ops/ref/ref.h"

namespace diffuse::ops::ref {

std::vector<double> to_double(const Tensor& t) {
  return t.to_vector<double>();
}

Tensor from_double(const std::vector<double>& values, const Shape& shape, DType dtype) {
  return Tensor::from_vector(values, shape, dtype);
}

}  // namespace diffuse::ops::ref
