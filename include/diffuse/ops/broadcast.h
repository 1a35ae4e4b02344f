// NumPy broadcasting rules.
#pragma once

#include "diffuse/core/tensor.h"

namespace diffuse::ops {

// The broadcast shape of `a` and `b`; throws diffuse::Error naming `op` and both shapes when
// they are incompatible.
Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op);

}  // namespace diffuse::ops
