// Original single-file Stable Diffusion / SDXL checkpoints (diffusers
// loaders/single_file_utils.py): the LDM / SGM key layouts that CompVis, Stability AI and A1111-era
// tools save, mapped to the diffusers names the models load.
//
//   model.diffusion_model.*             -> unet          (input_blocks / middle_block /
//                                                          output_blocks / time_embed / out)
//   first_stage_model.*                 -> vae           (encoder.down.N.block.M, mid.attn_1 with
//                                                          1x1-conv q/k/v/proj_out)
//   cond_stage_model.transformer.*      -> text_encoder  (SD 1.x: transformers CLIP names)
//   cond_stage_model.model.*            -> text_encoder  (SD 2.x: OpenCLIP, fused attn.in_proj)
//   conditioner.embedders.0.transformer.* -> text_encoder  (SDXL base: CLIP ViT-L)
//   conditioner.embedders.1.model.*     -> text_encoder_2 (SDXL base: OpenCLIP bigG, projection)
//   conditioner.embedders.0.model.*     -> text_encoder_2 (SDXL refiner: bigG only)
//
// The mapping is a TensorSource adaptor: tensors are renamed, and reshaped (VAE 1x1 convs) or
// sliced (OpenCLIP in_proj -> q/k/v) as views of the file's tensors, so weights stay zero-copy
// where the file allows. The architecture is detected from tensor names and shapes as
// diffusers' infer_diffusers_model_type does, and picks default configs (SD 1.5, SD 2.1, SDXL
// base / refiner, the inpainting variants) that are built into the library: no data files are
// needed at run time. SD 1.x / 2.x files load into StableDiffusionComponents
// (load_single_file_models), SDXL files into StableDiffusionXLComponents
// (load_single_file_xl_models).
// Thread-safety: the sources are immutable once built; functions share no state.
#pragma once

#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "diffuse/formats/tensor_source.h"
#include "diffuse/models/autoencoder_kl.h"
#include "diffuse/models/clip_text_model.h"
#include "diffuse/models/model_options.h"
#include "diffuse/models/unet_2d_condition.h"
#include "diffuse/pipelines/stable_diffusion.h"
#include "diffuse/pipelines/stable_diffusion_xl.h"

namespace diffuse {

// diffusers' model types of single files (infer_diffusers_model_type).
enum class SingleFileModelType {
  v1,             // SD 1.x (CLIP ViT-L text encoder)
  v2,             // SD 2.x (OpenCLIP ViT-H, cross_attention_dim 1024)
  inpainting,     // SD 1.x inpainting (UNet in_channels 9)
  inpainting_v2,  // SD 2.x inpainting
  xl_base,        // SDXL base (two text encoders)
  xl_refiner,     // SDXL refiner (OpenCLIP bigG only)
  xl_inpaint,     // SDXL inpainting
};
// diffusers' name of the type ("v1", "xl_base", ...).
std::string_view single_file_model_type_name(SingleFileModelType t);
// For people: "Stable Diffusion 1.x", "SDXL refiner", ...
std::string_view single_file_model_type_description(SingleFileModelType t);
// True for xl_base, xl_refiner and xl_inpaint.
bool is_sdxl(SingleFileModelType t);

// Detects the model type from tensor names and shapes, as diffusers does:
//   input_blocks.0.0.weight with 9 input channels     -> inpainting (v2 / xl variants)
//   input_blocks.2.1...attn2.to_k.weight of width 1024 -> v2
//   conditioner.embedders.1.model.* (OpenCLIP bigG)    -> xl_base
//   conditioner.embedders.0.model.*                    -> xl_refiner
//   otherwise                                          -> v1
// Throws diffuse::Error naming the source when it holds no UNet (model.diffusion_model.*).
SingleFileModelType infer_single_file_model_type(const TensorSource& checkpoint);

// The scheduler prediction type diffusers picks for a single file: "v_prediction" for SD 2.x
// (the 768 models) unless its global_step is 875000 (SD 2 base, epsilon), "epsilon" otherwise.
std::string infer_prediction_type(SingleFileModelType type, const TensorSource& checkpoint);

// The default diffusers configs of a model type, built into the library (copies of the
// runwayml/stable-diffusion-v1-5, stable-diffusion-inpainting, stabilityai/stable-diffusion-2-1,
// stable-diffusion-2-inpainting, stabilityai/stable-diffusion-xl-base-1.0,
// stable-diffusion-xl-refiner-1.0 and diffusers/stable-diffusion-xl-1.0-inpainting-0.1
// configs). `prediction_type` overrides the scheduler's (and for v2 picks the 768
// "v_prediction" or 512 "epsilon" sample size).
struct SingleFileConfigs {
  nlohmann::json unet, vae, text_encoder, scheduler;  // config.json / scheduler_config.json
  // SDXL: the OpenCLIP bigG CLIPTextModelWithProjection config; text_encoder is then CLIP ViT-L,
  // or null for the refiner. Null for SD 1.x / 2.x.
  nlohmann::json text_encoder_2;
  // SDXL model_index.json flags (StableDiffusionXLComponents); base / inpainting: true / false,
  // refiner: false / true.
  bool force_zeros_for_empty_prompt = true;
  bool requires_aesthetics_score = false;
};
SingleFileConfigs default_single_file_configs(SingleFileModelType type,
                                              std::optional<std::string> prediction_type = {});

// --- key maps (TensorSource adaptors) -----------------------------------------------------------

// The UNet of `checkpoint` under `prefix` ("model.diffusion_model." for SD 1/2/XL), seen with
// diffusers names for a UNet of `config` (which fixes how input_blocks.N / output_blocks.N map
// to down/up blocks). Keys under `prefix` that the map does not know keep their LDM name (the
// WeightLoader reports them as unused). Throws diffuse::Error when layers_per_block differs
// between blocks (not an LDM layout).
std::shared_ptr<TensorSource> ldm_unet_source(std::shared_ptr<const TensorSource> checkpoint,
                                              const UNet2DConditionConfig& config,
                                              const std::string& prefix = "model.diffusion_model.");
// The VAE under `prefix` ("first_stage_model."); the mid-block attention's 1x1-conv q/k/v/proj_out
// weights are reshaped to linear [C, C] (views).
std::shared_ptr<TensorSource> ldm_vae_source(std::shared_ptr<const TensorSource> checkpoint,
                                             const AutoencoderKLConfig& config,
                                             const std::string& prefix = "first_stage_model.");
// A transformers-layout CLIP text model under `prefix` ("cond_stage_model.transformer." for SD
// 1.x, "conditioner.embedders.0.transformer." for SDXL); old files without "text_model." get it.
std::shared_ptr<TensorSource> ldm_clip_source(
    std::shared_ptr<const TensorSource> checkpoint,
    const std::string& prefix = "cond_stage_model.transformer.");
// An OpenCLIP text model under `prefix` ("cond_stage_model.model." for SD 2.x,
// "conditioner.embedders.1.model." (SDXL base) or "conditioner.embedders.0.model." (SDXL
// refiner)): resblocks -> encoder.layers, attn.in_proj split into q/k/v (views),
// text_projection transposed to a Linear weight (CLIPTextModelWithProjection configs only).
// Under the SD 2.x prefix, resblocks at or beyond config.num_hidden_layers and text_projection
// are left out (SD 2.x conditions on the penultimate layer: 23 of 24 resblocks, no projection;
// diffusers' SD_2_TEXT_ENCODER_KEYS_TO_IGNORE); under other prefixes every resblock is mapped
// (SDXL's bigG keeps all 32: its pooled output comes from the last layer), so a file deeper than
// the config leaves unused tensors that the loader reports.
std::shared_ptr<TensorSource> open_clip_source(
    std::shared_ptr<const TensorSource> checkpoint, const CLIPTextConfig& config,
    const std::string& prefix = "cond_stage_model.model.");

// The text encoder layout of a single file: SD 1.x / 2.x have one text encoder, OpenCLIP when
// "cond_stage_model.model.token_embedding.weight" is present, CLIP otherwise. SDXL base (and
// inpainting) files hold CLIP ViT-L + OpenCLIP bigG under conditioner.embedders.0/1, the refiner
// bigG alone under conditioner.embedders.0.model.
enum class LdmTextEncoderLayout { clip, open_clip, sdxl, sdxl_refiner };

// --- loading ------------------------------------------------------------------------------------

struct SingleFileOptions {
  ModelOptions model;
  // Folder with the CLIP tokenizer (vocab.json + merges.txt, like a diffusers pipeline's
  // tokenizer/): single files do not contain the vocabulary. Required by from_single_file and
  // by from_single_file_xl for SDXL base / inpainting files; when empty and `config` is set,
  // `config`/tokenizer is used.
  std::filesystem::path tokenizer;
  // SDXL: folder with text_encoder_2's tokenizer (the same vocabulary with pad token "!", like
  // a diffusers SDXL pipeline's tokenizer_2/). Required by from_single_file_xl; when empty and
  // `config` is set, `config`/tokenizer_2 is used (for the refiner `config`/tokenizer when the
  // folder has no tokenizer_2/).
  std::filesystem::path tokenizer_2;
  // A diffusers pipeline folder whose unet/vae/text_encoder(_2)/scheduler configs (and for SDXL
  // the model_index.json flags) replace the built-in defaults (diffusers'
  // from_single_file(config=...)); empty: detect and use defaults.
  std::filesystem::path config;
  // Overrides the scheduler's prediction_type ("epsilon", "v_prediction"). Without it, SD 2.x
  // files are v_prediction (the 768 models) unless their global_step is 875000 (SD 2 base), as
  // diffusers infers.
  std::optional<std::string> prediction_type;
};

// Loads the text encoder, UNet, VAE and scheduler of an SD 1.x / 2.x single file (safetensors or
// .ckpt); the tokenizer is left null. Every tensor is checked against the model before loading:
// a missing or misshapen tensor is an error naming its key in the file. Throws diffuse::Error
// for SDXL files (pointing to load_single_file_xl_models) and unreadable files.
StableDiffusionComponents load_single_file_models(const std::filesystem::path& path,
                                                  const SingleFileOptions& options = {});

// load_single_file_models() plus the tokenizer from options.tokenizer (or options.config /
// "tokenizer"). Throws diffuse::Error explaining that the tokenizer folder must be given when
// neither is set.
StableDiffusionComponents from_single_file(const std::filesystem::path& path,
                                           const SingleFileOptions& options);
// Same with default configs and `tokenizer_folder` (required; see above).
StableDiffusionComponents from_single_file(const std::filesystem::path& path,
                                           const ModelOptions& options = {},
                                           const std::filesystem::path& tokenizer_folder = {});

// Loads the UNet, VAE, text encoders and scheduler of an SDXL single file (base, refiner or
// inpainting; safetensors or .ckpt) and the model_index.json flags; the tokenizers are left
// null. Base / inpainting: text_encoder (CLIP ViT-L) from conditioner.embedders.0.transformer.*,
// text_encoder_2 (bigG with projection) from conditioner.embedders.1.model.*; refiner:
// text_encoder is null, text_encoder_2 from conditioner.embedders.0.model.*. Weights stay views
// of the file where possible; every tensor is checked first, as above. Throws diffuse::Error
// for SD 1.x / 2.x files (pointing to load_single_file_models), a text_encoder_2 config without
// projection, and missing components.
StableDiffusionXLComponents load_single_file_xl_models(const std::filesystem::path& path,
                                                       const SingleFileOptions& options = {});

// load_single_file_xl_models() plus the tokenizers from options.tokenizer / tokenizer_2 (or
// options.config, see SingleFileOptions). Throws diffuse::Error explaining which tokenizer
// folder is missing.
StableDiffusionXLComponents from_single_file_xl(const std::filesystem::path& path,
                                                const SingleFileOptions& options);

// --- inspection ---------------------------------------------------------------------------------

// The tensors of one component of a single file, grouped by key prefix.
struct SingleFileComponentSummary {
  std::string component;  // "unet", "vae", "text_encoder", "text_encoder_2", "other"
  std::string prefix;     // "model.diffusion_model.", ...; empty for "other"
  int64_t tensors = 0;
  int64_t parameters = 0;
  uint64_t bytes = 0;                                  // as stored in the file
  std::map<std::string, int64_t> parameters_per_type;  // stored type ("F16", ...) -> parameters
};
// What `diffuse info` prints for a single file: the detected model type, the scheduler
// prediction type diffusers would infer, and the components by key prefix (only those present,
// in pipeline order, then "other" for the remaining tensors such as DDPM buffers or EMA copies).
struct SingleFileSummary {
  SingleFileModelType type = SingleFileModelType::v1;
  std::string prediction_type;
  std::vector<SingleFileComponentSummary> components;
};
// nullopt when `checkpoint` is not an original SD / SDXL checkpoint (no
// model.diffusion_model.input_blocks.0.0.weight). Reads names, shapes and metadata only.
std::optional<SingleFileSummary> summarize_single_file(const TensorSource& checkpoint);

// --- writing (the reverse key map) --------------------------------------------------------------

// The tensors of a diffusers SD 1.x / 2.x / XL pipeline folder (unet, vae, text encoders) under
// their original LDM names: UNet and VAE as above reversed (VAE attention weights as
// [C, C, 1, 1] convs), the text encoders by `layout`: CLIP (cond_stage_model.transformer.*),
// OpenCLIP (cond_stage_model.model.*, q/k/v fused into in_proj, text_projection transposed
// back), SDXL (text_encoder as conditioner.embedders.0.transformer.*, text_encoder_2 as
// OpenCLIP conditioner.embedders.1.model.*) or the SDXL refiner (text_encoder_2, or a
// text_encoder folder when there is no text_encoder_2/, as conditioner.embedders.0.model.*).
// Tensors are views of the folder's files where possible. Throws diffuse::Error naming a tensor
// without an LDM name.
std::vector<std::pair<std::string, Tensor>> diffusers_to_ldm(const std::filesystem::path& folder,
                                                             LdmTextEncoderLayout layout);
// Writes diffusers_to_ldm(folder, layout) to a safetensors single file.
void save_single_file(const std::filesystem::path& folder, const std::filesystem::path& out,
                      LdmTextEncoderLayout layout = LdmTextEncoderLayout::clip);

}  // namespace diffuse
