// Shape-changing ops that copy: concatenation, padding, nearest upsampling, average pooling,
// embedding lookup. Results are new contiguous tensors on the input's device; inputs may be any
// view. Bad arguments throw diffuse::Error naming the op, the shapes and what was expected.
#pragma once

#include <vector>

#include "diffuse/core/tensor.h"

namespace diffuse::ops {

// torch.cat: all tensors have the same dtype and rank and equal extents except along `dim`
// (negative counts from the end). Any dtype. Requires at least one tensor.
Tensor concat(const std::vector<Tensor>& tensors, int64_t dim);

enum class PadMode { constant, reflect, replicate };

// torch.nn.functional.pad: `pads` = (left, right) pairs starting from the LAST dim, at most
// x.dim() pairs. constant: negative pads crop; reflect: pads < the padded dim's extent (mirror
// without repeating the edge); replicate: repeats the edge. Any dtype for constant (value
// converted to the dtype), floating and integer dtypes for the others.
Tensor pad(const Tensor& x, const std::vector<int64_t>& pads, PadMode mode = PadMode::constant,
           double value = 0.0);

// torch.nn.functional.interpolate(mode="nearest") on NCHW x: output extent floor(in * scale)
// per spatial dim, source index floor(dst * in / out) like PyTorch's legacy 'nearest'. Any
// dtype. scale > 0.
Tensor upsample_nearest(const Tensor& x, double scale);
// The same with an explicit output size {H_out, W_out}.
Tensor upsample_nearest(const Tensor& x, const Shape& size);

// torch.nn.functional.avg_pool2d on NCHW (or CHW) x with a square kernel, stride and padding
// (stride <= 0 means stride = kernel). Floating dtypes. padding <= kernel / 2.
Tensor avg_pool2d(const Tensor& x, int64_t kernel, int64_t stride = 0, int64_t padding = 0,
                  bool count_include_pad = true, bool ceil_mode = false);

// torch.nn.functional.embedding: rows of `weight` [V, D] (any dtype) selected by `ids` (i32 or
// i64, any shape); result shape ids.shape + [D]. An id outside [0, V) throws diffuse::Error
// naming the id and V.
Tensor embedding(const Tensor& weight, const Tensor& ids);

}  // namespace diffuse::ops
