// UNet2DConditionModel: the denoiser of Stable Diffusion 1.x, 2.x and XL (diffusers
// models/unets/unet_2d_condition.py), with the config options those models and their
// fine-tunes use.
#pragma once

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "diffuse/core/tensor.h"
#include "diffuse/formats/config.h"
#include "diffuse/formats/weight_loader.h"
#include "diffuse/models/model_options.h"

namespace diffuse {

// config.json of a UNet2DConditionModel; field names are the JSON keys, defaults are diffusers'.
struct UNet2DConditionConfig {
  std::optional<int64_t> sample_size;
  int64_t in_channels = 4;
  int64_t out_channels = 4;
  bool center_input_sample = false;
  bool flip_sin_to_cos = true;
  double freq_shift = 0;
  std::vector<std::string> down_block_types = {"CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                               "CrossAttnDownBlock2D", "DownBlock2D"};
  std::optional<std::string> mid_block_type = "UNetMidBlock2DCrossAttn";
  std::vector<std::string> up_block_types = {"UpBlock2D", "CrossAttnUpBlock2D",
                                             "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"};
  nlohmann::json only_cross_attention = false;  // bool or per-block list of bools
  std::vector<int64_t> block_out_channels = {320, 640, 1280, 1280};
  IntOrList layers_per_block = 2;
  int64_t downsample_padding = 1;
  double mid_block_scale_factor = 1;
  double dropout = 0.0;
  std::string act_fn = "silu";
  std::optional<int64_t> norm_num_groups = 32;
  double norm_eps = 1e-5;
  IntOrList cross_attention_dim = 1280;
  nlohmann::json transformer_layers_per_block = 1;  // int, list, or list of lists
  nlohmann::json reverse_transformer_layers_per_block = nullptr;
  std::optional<int64_t> encoder_hid_dim;
  std::optional<std::string> encoder_hid_dim_type;
  IntOrList attention_head_dim = 8;
  std::optional<IntOrList> num_attention_heads;
  bool dual_cross_attention = false;
  bool use_linear_projection = false;
  std::optional<std::string> class_embed_type;
  std::optional<std::string> addition_embed_type;
  std::optional<int64_t> addition_time_embed_dim;
  std::optional<int64_t> num_class_embeds;
  bool upcast_attention = false;
  std::string resnet_time_scale_shift = "default";
  bool resnet_skip_time_act = false;
  double resnet_out_scale_factor = 1.0;
  std::string time_embedding_type = "positional";
  std::optional<int64_t> time_embedding_dim;
  std::optional<std::string> time_embedding_act_fn;
  std::optional<std::string> timestep_post_act;
  std::optional<int64_t> time_cond_proj_dim;
  int64_t conv_in_kernel = 3;
  int64_t conv_out_kernel = 3;
  std::optional<int64_t> projection_class_embeddings_input_dim;
  std::string attention_type = "default";
  bool class_embeddings_concat = false;
  std::optional<bool> mid_block_only_cross_attention;
  std::optional<std::string> cross_attention_norm;
  int64_t addition_embed_type_num_heads = 64;

  // Parses a config.json object (unknown keys are warned about, wrong types are errors).
  static UNet2DConditionConfig from_json(const nlohmann::json& json);
  // diffusers' constructor checks (block counts agree, unsupported options named).
  void validate() const;
};

// Optional inputs of the UNet forward pass.
struct UNet2DConditionInputs {
  Tensor class_labels;            // [B] for class-conditioned UNets
  Tensor timestep_cond;           // [B, time_cond_proj_dim] (LCM guidance embedding)
  Tensor text_embeds;             // SDXL added_cond_kwargs["text_embeds"] [B, D]
  Tensor time_ids;                // SDXL added_cond_kwargs["time_ids"] [B, 6]
  Tensor encoder_attention_mask;  // [B, M] keep-mask (1 = keep) or undefined
  // ControlNet residuals: one per down-block output, and one for the mid block.
  std::vector<Tensor> down_block_additional_residuals;
  Tensor mid_block_additional_residual;
};

class UNet2DConditionModel {
 public:
  // Builds the model from `config`, taking every weight from `weights` (diffusers names,
  // shape-checked). Throws diffuse::Error naming a missing or misshapen tensor.
  UNet2DConditionModel(const UNet2DConditionConfig& config, const WeightLoader& weights,
                       DType compute_dtype = DType::f32);
  // Loads `folder` (config.json + diffusion_pytorch_model[.variant].safetensors/.bin).
  static UNet2DConditionModel from_pretrained(const std::filesystem::path& folder,
                                              const ModelOptions& options = {});
  ~UNet2DConditionModel();
  UNet2DConditionModel(UNet2DConditionModel&&) noexcept;
  UNet2DConditionModel& operator=(UNet2DConditionModel&&) noexcept;

  // The noise prediction for `sample` [B, in_channels, H, W] at `timestep` (a scalar or [B],
  // integer or float) given `encoder_hidden_states` [B, M, cross_attention_dim].
  // Thread-safety: forward() is const and may run concurrently on one model.
  Tensor forward(const Tensor& sample, const Tensor& timestep, const Tensor& encoder_hidden_states,
                 const UNet2DConditionInputs& inputs = {}) const;

  const UNet2DConditionConfig& config() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace diffuse
