// Scaled dot-product attention (torch.nn.functional.scaled_dot_product_attention).
#pragma once

#include <optional>

#include "diffuse/core/tensor.h"

namespace diffuse::ops {

struct AttentionOptions {
  // Undefined, or bool (true = attend) or a float dtype (added to the scores), broadcastable to
  // [B, H, Lq, Lk].
  Tensor mask;
  // Multiplies q.k; default 1 / sqrt(D).
  std::optional<double> scale;
  // Query i attends to keys j <= i (top-left aligned, like torch); may be combined with `mask`.
  bool is_causal = false;
};

// softmax(q k^T * scale + mask) v. q: [B, H, Lq, D], k: [B, H, Lk, D], v: [B, H, Lk, Dv], any
// float dtype and strides. `compute` is f32 or bf16 (bf16 products with f32 accumulation and an
// f32 softmax). Returns a new contiguous [B, H, Lq, Dv] f32 tensor. A query row whose keys are
// all masked out yields NaN like torch does.
// Computed flash-attention style (blocks of queries x blocks of keys with an online softmax):
// the Lq x Lk score matrix is never materialized; the extra memory is O(threads x block^2)
// plus compute-dtype copies of q, k, v. Throws diffuse::Error naming "attention" and the
// shapes on any mismatch.
Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionOptions& o = {},
                 DType compute = DType::f32);

}  // namespace diffuse::ops
