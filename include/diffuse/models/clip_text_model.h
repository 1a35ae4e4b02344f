// CLIPTextModel and CLIPTextModelWithProjection (transformers models/clip/modeling_clip.py):
// the text encoders of Stable Diffusion 1.x (OpenAI ViT-L/14), 2.x (OpenCLIP ViT-H) and XL
// (ViT-L + bigG with projection).
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "diffuse/core/tensor.h"
#include "diffuse/formats/weight_loader.h"
#include "diffuse/models/model_options.h"

namespace diffuse {

// transformers CLIPTextConfig (keys and defaults).
struct CLIPTextConfig {
  int64_t vocab_size = 49408;
  int64_t hidden_size = 512;
  int64_t intermediate_size = 2048;
  int64_t projection_dim = 512;
  int64_t num_hidden_layers = 12;
  int64_t num_attention_heads = 8;
  int64_t max_position_embeddings = 77;
  std::string hidden_act = "quick_gelu";
  double layer_norm_eps = 1e-5;
  int64_t pad_token_id = 1;
  int64_t bos_token_id = 49406;
  int64_t eos_token_id = 49407;
  // From "architectures": true for CLIPTextModelWithProjection (adds text_projection).
  bool with_projection = false;

  static CLIPTextConfig from_json(const nlohmann::json& json);
  void validate() const;
};

struct CLIPTextOutput {
  Tensor last_hidden_state;           // [B, L, hidden] (after final_layer_norm)
  Tensor pooler_output;               // [B, hidden]
  Tensor text_embeds;                 // [B, projection_dim] (with projection only)
  std::vector<Tensor> hidden_states;  // embeddings + each layer's output (when requested)
};

class CLIPTextModel {
 public:
  CLIPTextModel(const CLIPTextConfig& config, const WeightLoader& weights,
                DType compute_dtype = DType::f32);
  // A transformers folder: config.json + model[.variant].safetensors / pytorch_model.bin.
  static CLIPTextModel from_pretrained(const std::filesystem::path& folder,
                                       const ModelOptions& options = {});
  ~CLIPTextModel();
  CLIPTextModel(CLIPTextModel&&) noexcept;
  CLIPTextModel& operator=(CLIPTextModel&&) noexcept;

  // input_ids [B, L] (i64 or i32), L <= max_position_embeddings, causal attention, no padding
  // mask (as the SD pipelines call it). Pooling follows transformers: eos_token_id == 2 selects
  // the legacy argmax(input_ids) position, otherwise the first eos position (0 when none).
  // `output_hidden_states` fills hidden_states (num_hidden_layers + 1 entries).
  CLIPTextOutput forward(const Tensor& input_ids, bool output_hidden_states = false) const;
  // The model's final layer norm (diffusers applies it to hidden_states[-(clip_skip + 1)]).
  Tensor final_layer_norm(const Tensor& hidden) const;

  const CLIPTextConfig& config() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace diffuse
