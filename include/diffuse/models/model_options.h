// Options shared by every model loader.
#pragma once

#include <string>

#include "diffuse/core/dtype.h"

namespace diffuse {

struct ModelOptions {
  // dtype the weights are kept in (f32, f16, bf16). Weights already in this dtype in the file are
  // used in place (memory-mapped, zero-copy).
  DType weight_dtype = DType::f32;
  // dtype of matrix products and convolutions: f32, or bf16 with f32 accumulation.
  DType compute_dtype = DType::f32;
  // diffusers weight variant ("fp16" -> diffusion_pytorch_model.fp16.safetensors); empty: none.
  std::string variant;
};

}  // namespace diffuse
