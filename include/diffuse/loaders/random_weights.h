// Random weights for any diffusers model config: the tensors a model asks for (names and shapes
// as diffusers / transformers name them), and a writer that stores random values for them as
// the diffusers folder layout expects. Useful for tests, benchmarks and smoke runs of a
// production architecture without downloading its weights.
//
// The names and shapes come from building the model itself over a recording source, so they
// are exactly what the loader will ask for (no second list to keep in sync).
// Thread-safety: the functions are reentrant; they share no state.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "diffuse/core/dtype.h"
#include "diffuse/formats/safetensors.h"

namespace diffuse {

// The model classes the writer and the single-file loader know.
enum class ModelClass { unet_2d_condition, autoencoder_kl, clip_text_model };

// "UNet2DConditionModel", "AutoencoderKL", "CLIPTextModel".
std::string_view model_class_name(ModelClass c);

// The class of a config.json: diffusers' "_class_name" (UNet2DConditionModel, AutoencoderKL) or
// transformers' "architectures" / "model_type" (CLIPTextModel, CLIPTextModelWithProjection,
// clip_text_model). Throws diffuse::Error naming `where` and the class found when unsupported.
ModelClass model_class_of(const nlohmann::json& config, const std::string& where = "config");

// Every tensor the model of `config` loads, in the order the model asks for them, with the
// shape it expects and `dtype` (integer buffers keep their own dtype). Builds the model over a
// source that hands out broadcast zeros, so no weight memory is allocated. Throws
// diffuse::Error for an invalid config.
std::vector<SafetensorsTensorSpec> model_weight_specs(const nlohmann::json& config,
                                                      DType dtype = DType::f32);

// The weight file name of a model folder: "diffusion_pytorch_model.safetensors" for diffusers
// models, "model.safetensors" for transformers ones.
std::string weights_file_name(ModelClass c);

struct RandomWeightsOptions {
  uint64_t seed = 0;
  DType dtype = DType::f32;  // f32, f16 or bf16
  double std = 0.02;         // N(0, std^2) for weights; biases 0, norm weights 1
};

// Writes random weights for `config_or_folder`:
//   - a config.json file or a model folder holding one: writes the weights into `out`; when
//     `out` ends in ".safetensors" it is the file, otherwise it is a folder that receives
//     config.json and the weight file (weights_file_name());
//   - a pipeline folder (model_index.json): `out` becomes a pipeline folder: model_index.json
//     and every other small file (scheduler and tokenizer files) are copied, and every model
//     component of a known class gets random weights; components of other classes are copied
//     without weights and named in a warning.
// Values follow RandomTensorSource(seed, std): deterministic per tensor name, so the same seed
// gives the same file. Tensors are generated and written one at a time (bounded memory).
// Returns the weight files written. Throws diffuse::Error naming the file and the problem.
std::vector<std::filesystem::path> write_random_weights(
    const std::filesystem::path& config_or_folder, const std::filesystem::path& out,
    const RandomWeightsOptions& options = {});

}  // namespace diffuse
