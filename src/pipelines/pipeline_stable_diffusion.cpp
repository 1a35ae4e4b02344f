// diffusers pipelines/stable_diffusion/pipeline_stable_diffusion.py.
#include "diffuse/pipelines/stable_diffusion.h"

#include <algorithm>

#include "diffuse/core/log.h"
#include "diffuse/formats/config.h"
#include "diffuse/ops.h"
#include "diffuse/pipelines/prompt_weighting.h"
#include "src/pipelines/pipeline_utils.h"

namespace diffuse {

namespace pu = pipeline_utils;

// --- Components ----------------------------------------------------------------------------------

namespace {

std::string required_class(const nlohmann::json& index, const std::string& name,
                           const std::filesystem::path& where) {
  const auto c = pu::component_class(index, name, where);
  DIFFUSE_CHECK(c.has_value(), where.string(), ": model_index.json has no usable '", name,
                "' component");
  return *c;
}

}  // namespace

StableDiffusionComponents StableDiffusionComponents::from_pretrained(
    const std::filesystem::path& folder, const ModelOptions& options) {
  const auto index = read_json_file(folder / "model_index.json");
  const std::string tokenizer = required_class(index, "tokenizer", folder);
  DIFFUSE_CHECK(tokenizer == "CLIPTokenizer" || tokenizer == "CLIPTokenizerFast", folder.string(),
                ": unsupported tokenizer class '", tokenizer, "' (expected CLIPTokenizer)");
  const std::string text_encoder = required_class(index, "text_encoder", folder);
  DIFFUSE_CHECK(text_encoder == "CLIPTextModel" || text_encoder == "CLIPTextModelWithProjection",
                folder.string(), ": unsupported text encoder class '", text_encoder, "'");
  DIFFUSE_CHECK(required_class(index, "unet", folder) == "UNet2DConditionModel", folder.string(),
                ": unsupported unet class '", required_class(index, "unet", folder), "'");
  DIFFUSE_CHECK(required_class(index, "vae", folder) == "AutoencoderKL", folder.string(),
                ": unsupported vae class '", required_class(index, "vae", folder), "'");
  const std::string scheduler = required_class(index, "scheduler", folder);

  StableDiffusionComponents c;
  c.tokenizer = std::make_shared<ClipTokenizer>(ClipTokenizer::from_folder(folder / "tokenizer"));
  c.text_encoder = std::make_shared<CLIPTextModel>(
      CLIPTextModel::from_pretrained(folder / "text_encoder", options));
  c.unet = std::make_shared<UNet2DConditionModel>(
      UNet2DConditionModel::from_pretrained(folder / "unet", options));
  c.vae = std::make_shared<AutoencoderKL>(AutoencoderKL::from_pretrained(folder / "vae", options));
  c.scheduler =
      make_scheduler(scheduler, read_json_file(folder / "scheduler" / "scheduler_config.json"));
  return c;
}

int64_t StableDiffusionComponents::vae_scale_factor() const {
  return vae->scale_factor();
}

// --- encode_prompt -------------------------------------------------------------------------------

namespace {

Tensor encode_text(const StableDiffusionComponents& c, const std::string& text,
                   std::optional<int64_t> clip_skip) {
  const auto ids = c.tokenizer->encode_padded(text, c.tokenizer->model_max_length());
  const Tensor input_ids =
      Tensor::from_vector(ids, {1, static_cast<int64_t>(ids.size())}, DType::i64);
  if (!clip_skip) return c.text_encoder->forward(input_ids).last_hidden_state;
  // diffusers: hidden_states[-(clip_skip + 1)] through the final layer norm.
  const auto out = c.text_encoder->forward(input_ids, true);
  const auto n = static_cast<int64_t>(out.hidden_states.size());
  DIFFUSE_CHECK(*clip_skip + 1 <= n, "clip_skip ", *clip_skip,
                " is too large for a text encoder with ", n - 1, " layers");
  return c.text_encoder->final_layer_norm(out.hidden_states[n - 1 - *clip_skip]);
}

}  // namespace

PromptEmbeds encode_prompt(const StableDiffusionComponents& c, const std::string& prompt,
                           int64_t num_images_per_prompt, bool do_classifier_free_guidance,
                           const std::optional<std::string>& negative_prompt,
                           std::optional<int64_t> clip_skip, const Tensor& prompt_embeds,
                           const Tensor& negative_prompt_embeds, bool prompt_weighting) {
  // Prompt weighting: A1111 syntax and 77-token chunks; the prompt and the negative prompt are
  // padded with empty chunks to the same chunk count so the CFG batch lines up.
  const int64_t context = c.tokenizer ? c.tokenizer->model_max_length() : 77;
  const auto text = [&](const std::string& s, std::optional<int64_t> skip, int64_t min_chunks) {
    DIFFUSE_CHECK(c.tokenizer && c.text_encoder,
                  "encode_prompt: the pipeline has no tokenizer/text_encoder; pass prompt_embeds "
                  "and negative_prompt_embeds");
    if (!prompt_weighting) return encode_text(c, s, skip);
    PromptWeightingOptions o;
    o.min_chunks = min_chunks;
    return encode_weighted_prompt(*c.tokenizer, *c.text_encoder, s, skip, o);
  };
  int64_t negative_chunks = 1;
  if (prompt_weighting && do_classifier_free_guidance)
    negative_chunks = negative_prompt_embeds.defined()
                          ? std::max<int64_t>(1, negative_prompt_embeds.size(1) / context)
                          : count_prompt_chunks(*c.tokenizer, negative_prompt.value_or(""));
  PromptEmbeds e;
  e.prompt_embeds =
      prompt_embeds.defined() ? prompt_embeds : text(prompt, clip_skip, negative_chunks);
  DIFFUSE_CHECK(e.prompt_embeds.dim() == 3 && e.prompt_embeds.size(0) == 1,
                "prompt_embeds must be [1, L, D], got ", shape_str(e.prompt_embeds.shape()));
  if (do_classifier_free_guidance) {
    // The unconditional embeddings never get clip_skip (diffusers 0.31).
    e.negative_prompt_embeds = negative_prompt_embeds.defined()
                                   ? negative_prompt_embeds
                                   : text(negative_prompt.value_or(""), std::nullopt,
                                          std::max<int64_t>(1, e.prompt_embeds.size(1) / context));
    DIFFUSE_CHECK(e.negative_prompt_embeds.shape() == e.prompt_embeds.shape(),
                  "`prompt_embeds` and `negative_prompt_embeds` must have the same shape, got ",
                  shape_str(e.prompt_embeds.shape()), " and ",
                  shape_str(e.negative_prompt_embeds.shape()));
    e.negative_prompt_embeds = pu::repeat_batch(e.negative_prompt_embeds, num_images_per_prompt);
  }
  e.prompt_embeds = pu::repeat_batch(e.prompt_embeds, num_images_per_prompt);
  return e;
}

// --- StableDiffusionPipeline ---------------------------------------------------------------------

StableDiffusionPipeline::StableDiffusionPipeline(StableDiffusionComponents components)
    : components_(std::move(components)) {}

StableDiffusionPipeline StableDiffusionPipeline::from_pretrained(
    const std::filesystem::path& folder, const ModelOptions& options) {
  return StableDiffusionPipeline(StableDiffusionComponents::from_pretrained(folder, options));
}

PipelineOutput StableDiffusionPipeline::operator()(const StableDiffusionParams& p) {
  auto& c = components_;
  const int64_t vsf = c.vae_scale_factor();
  const int64_t default_size = c.unet->config().sample_size.value_or(64) * vsf;
  const int64_t height = p.height.value_or(default_size);
  const int64_t width = p.width.value_or(default_size);

  // 1. Check inputs.
  pu::check_inputs(p, height, width);
  const int64_t batch = p.num_images_per_prompt;
  const bool cfg = p.guidance_scale > 1.0 && !c.unet->config().time_cond_proj_dim;

  // 2. Encode the prompt.
  const PromptEmbeds embeds =
      encode_prompt(c, p.prompt, batch, cfg, p.negative_prompt, p.clip_skip, p.prompt_embeds,
                    p.negative_prompt_embeds, p.prompt_weighting);

  // 3. Timesteps.
  pu::retrieve_timesteps(*c.scheduler, p);

  // 4. Initial latents, scaled by the scheduler's init_noise_sigma.
  pu::Generators generators(p.seeds, batch);
  const Shape shape{batch, c.unet->config().in_channels, height / vsf, width / vsf};
  Tensor latents = pu::prepare_latents(*c.scheduler, p.latents, shape, generators);

  // 5. Denoising loop.
  latents =
      pu::denoise(*c.unet, *c.scheduler, p, latents, c.scheduler->timesteps(), embeds, generators);

  // 6. Decode.
  return pu::finish(*c.vae, p, latents, generators);
}

}  // namespace diffuse
