// diffusers pipelines/stable_diffusion_xl/pipeline_stable_diffusion_xl.py: the components, the
// two-encoder encode_prompt and text-to-image.
#include "diffuse/pipelines/stable_diffusion_xl.h"

#include <algorithm>

#include "diffuse/formats/config.h"
#include "diffuse/ops.h"
#include "diffuse/pipelines/prompt_weighting.h"
#include "src/pipelines/pipeline_utils.h"

namespace diffuse {

namespace pu = pipeline_utils;

// --- Components ----------------------------------------------------------------------------------

namespace {

bool is_clip_tokenizer(const std::string& c) {
  return c == "CLIPTokenizer" || c == "CLIPTokenizerFast";
}

std::shared_ptr<ClipTokenizer> load_tokenizer(const nlohmann::json& index,
                                              const std::filesystem::path& folder,
                                              const std::string& name) {
  const auto cls = pu::component_class(index, name, folder);
  DIFFUSE_CHECK(cls.has_value(), folder.string(), ": model_index.json has no '", name,
                "' for its text encoder");
  DIFFUSE_CHECK(is_clip_tokenizer(*cls), folder.string(), ": unsupported ", name, " class '", *cls,
                "' (expected CLIPTokenizer)");
  return std::make_shared<ClipTokenizer>(ClipTokenizer::from_folder(folder / name));
}

std::shared_ptr<CLIPTextModel> load_text_encoder(const std::filesystem::path& folder,
                                                 const std::string& name,
                                                 const ModelOptions& options) {
  return std::make_shared<CLIPTextModel>(CLIPTextModel::from_pretrained(folder / name, options));
}

bool json_flag(const nlohmann::json& index, const char* key, bool fallback) {
  return index.contains(key) && index[key].is_boolean() ? index[key].get<bool>() : fallback;
}

}  // namespace

StableDiffusionXLComponents StableDiffusionXLComponents::from_pretrained(
    const std::filesystem::path& folder, const ModelOptions& options) {
  const auto index = read_json_file(folder / "model_index.json");
  const auto cls = [&](const std::string& name) {
    return pu::component_class(index, name, folder);
  };
  const auto require = [&](const std::string& name, const std::string& expected) {
    const auto c = cls(name);
    DIFFUSE_CHECK(c.has_value(), folder.string(), ": model_index.json has no '", name,
                  "' component");
    DIFFUSE_CHECK(expected.empty() || *c == expected, folder.string(), ": unsupported ", name,
                  " class '", *c, "' (expected ", expected, ")");
    return *c;
  };

  StableDiffusionXLComponents c;
  const auto te = cls("text_encoder");
  const auto te2 = cls("text_encoder_2");
  if (te2) {
    DIFFUSE_CHECK(*te2 == "CLIPTextModelWithProjection", folder.string(),
                  ": unsupported text_encoder_2 class '", *te2,
                  "' (expected CLIPTextModelWithProjection)");
    c.tokenizer_2 = load_tokenizer(index, folder, "tokenizer_2");
    c.text_encoder_2 = load_text_encoder(folder, "text_encoder_2", options);
    if (te) {
      DIFFUSE_CHECK(*te == "CLIPTextModel", folder.string(), ": unsupported text_encoder class '",
                    *te, "' (expected CLIPTextModel)");
      c.tokenizer = load_tokenizer(index, folder, "tokenizer");
      c.text_encoder = load_text_encoder(folder, "text_encoder", options);
    }
  } else {
    // Early refiner folders name their only (bigG) encoder text_encoder.
    DIFFUSE_CHECK(te && *te == "CLIPTextModelWithProjection", folder.string(),
                  ": model_index.json has no text_encoder_2 (an SDXL pipeline needs the "
                  "CLIPTextModelWithProjection encoder)");
    c.tokenizer_2 = load_tokenizer(index, folder, "tokenizer");
    c.text_encoder_2 = load_text_encoder(folder, "text_encoder", options);
  }
  DIFFUSE_CHECK(c.text_encoder_2->config().with_projection, folder.string(),
                ": text_encoder_2 must be a CLIPTextModelWithProjection");
  require("unet", "UNet2DConditionModel");
  require("vae", "AutoencoderKL");
  c.unet = std::make_shared<UNet2DConditionModel>(
      UNet2DConditionModel::from_pretrained(folder / "unet", options));
  DIFFUSE_CHECK(c.unet->config().addition_embed_type.value_or("") == "text_time", folder.string(),
                ": the unet is not an SDXL UNet (addition_embed_type is not \"text_time\")");
  c.vae = std::make_shared<AutoencoderKL>(AutoencoderKL::from_pretrained(folder / "vae", options));
  c.scheduler = make_scheduler(require("scheduler", ""),
                               read_json_file(folder / "scheduler" / "scheduler_config.json"));
  c.force_zeros_for_empty_prompt = json_flag(index, "force_zeros_for_empty_prompt", true);
  c.requires_aesthetics_score = json_flag(index, "requires_aesthetics_score", false);
  return c;
}

int64_t StableDiffusionXLComponents::vae_scale_factor() const {
  return vae->scale_factor();
}

// --- encode_prompt -------------------------------------------------------------------------------

namespace {

struct EncodedText {
  Tensor hidden;  // [1, 77, D] hidden_states[-(clip_skip + 2)]
  Tensor pooled;  // [1, projection_dim] text_embeds (projection encoders only)
};

// One encoder's part: SDXL always reads the penultimate layer, without the final layer norm.
EncodedText encode_with(const ClipTokenizer& tokenizer, const CLIPTextModel& encoder,
                        const std::string& text, int64_t max_length,
                        std::optional<int64_t> clip_skip) {
  const auto ids = tokenizer.encode_padded(text, max_length);
  const Tensor input_ids =
      Tensor::from_vector(ids, {1, static_cast<int64_t>(ids.size())}, DType::i64);
  const auto out = encoder.forward(input_ids, true);
  const auto n = static_cast<int64_t>(out.hidden_states.size());
  const int64_t back = clip_skip.value_or(0) + 2;
  DIFFUSE_CHECK(back <= n, "clip_skip ", clip_skip.value_or(0),
                " is too large for a text encoder with ", n - 1, " layers");
  EncodedText e;
  e.hidden = out.hidden_states[static_cast<std::size_t>(n - back)].to(DType::f32);
  if (out.text_embeds.defined()) e.pooled = out.text_embeds.to(DType::f32);
  return e;
}

// The encoders in diffusers' order: (tokenizer, text_encoder) when present, then the second.
struct EncoderPair {
  const ClipTokenizer* tokenizer;
  const CLIPTextModel* encoder;
};
std::vector<EncoderPair> encoders(const StableDiffusionXLComponents& c) {
  DIFFUSE_CHECK(c.tokenizer_2 && c.text_encoder_2,
                "StableDiffusionXL: tokenizer_2 and text_encoder_2 are required");
  std::vector<EncoderPair> e;
  if (c.text_encoder) {
    DIFFUSE_CHECK(c.tokenizer != nullptr, "StableDiffusionXL: text_encoder without tokenizer");
    e.push_back({c.tokenizer.get(), c.text_encoder.get()});
  }
  e.push_back({c.tokenizer_2.get(), c.text_encoder_2.get()});
  return e;
}

// Both encoders' hidden states concatenated on the feature axis, and the first pooled output.
// With `weighting`: A1111 syntax and 77-token chunks per encoder (weighting->min_chunks chunks
// at least; callers make it the same for every text so the axes line up).
std::pair<Tensor, Tensor> encode_texts(const std::vector<EncoderPair>& pairs,
                                       const std::vector<std::string>& texts, int64_t max_length,
                                       std::optional<int64_t> clip_skip,
                                       const PromptWeightingOptions* weighting) {
  std::vector<Tensor> hidden;
  Tensor pooled;
  for (std::size_t i = 0; i < pairs.size(); ++i) {
    EncodedText e;
    if (weighting != nullptr) {
      const auto chunks = weighted_prompt_chunks(*pairs[i].tokenizer, texts[i], *weighting);
      e.hidden = encode_prompt_chunks_xl(*pairs[i].encoder, chunks, clip_skip,
                                         weighting->restore_mean, &e.pooled)
                     .to(DType::f32);
      if (e.pooled.defined()) e.pooled = e.pooled.to(DType::f32);
    } else {
      e = encode_with(*pairs[i].tokenizer, *pairs[i].encoder, texts[i], max_length, clip_skip);
    }
    hidden.push_back(e.hidden);
    // diffusers keeps the first 2-D output[0]: only projection encoders have one.
    if (!pooled.defined() && e.pooled.defined()) pooled = e.pooled;
  }
  DIFFUSE_CHECK(pooled.defined(), "StableDiffusionXL: no text encoder gave pooled embeddings");
  DIFFUSE_CHECK(hidden.size() == 1 || hidden[0].size(1) == hidden[1].size(1),
                "StableDiffusionXL: the two encoders' prompts have different chunk counts");
  return {hidden.size() == 1 ? hidden[0] : ops::concat(hidden, -1), pooled};
}

// A non-empty string or the fallback (Python's `a or b` on strings).
std::string or_else(const std::optional<std::string>& a, const std::string& b) {
  return a && !a->empty() ? *a : b;
}

}  // namespace

XLPromptEmbeds encode_prompt(const StableDiffusionXLComponents& c, const StableDiffusionXLParams& p,
                             bool do_classifier_free_guidance) {
  const auto pairs = encoders(c);
  const int64_t max_length = c.tokenizer_2->model_max_length();
  // The texts of each encoder: prompt, prompt_2 (default: prompt); the refiner has only the
  // second encoder, which then reads `prompt` (diffusers zips prompts and encoders).
  const auto texts = [&](const std::string& a, const std::optional<std::string>& b) {
    std::vector<std::string> t{a, or_else(b, a)};
    t.resize(pairs.size());
    return t;
  };
  const std::string negative = p.negative_prompt.value_or("");
  const auto prompt_texts = texts(p.prompt, p.prompt_2);
  const auto negative_texts = texts(negative, p.negative_prompt_2);
  const bool zero_negative = !p.negative_prompt && c.force_zeros_for_empty_prompt;
  const bool encode_negative =
      do_classifier_free_guidance && !p.negative_prompt_embeds.defined() && !zero_negative;

  // Prompt weighting: every text gets the chunk count of the longest, so that both encoders'
  // states concatenate and the CFG batch lines up.
  PromptWeightingOptions weighting;
  if (p.prompt_weighting) {
    for (std::size_t i = 0; i < pairs.size(); ++i) {
      if (!p.prompt_embeds.defined())
        weighting.min_chunks = std::max(weighting.min_chunks,
                                        count_prompt_chunks(*pairs[i].tokenizer, prompt_texts[i]));
      if (encode_negative)
        weighting.min_chunks = std::max(
            weighting.min_chunks, count_prompt_chunks(*pairs[i].tokenizer, negative_texts[i]));
    }
    if (p.prompt_embeds.defined())
      weighting.min_chunks =
          std::max<int64_t>(weighting.min_chunks, p.prompt_embeds.size(1) / max_length);
  }
  const PromptWeightingOptions* w = p.prompt_weighting ? &weighting : nullptr;

  XLPromptEmbeds e;
  if (p.prompt_embeds.defined()) {
    DIFFUSE_CHECK(
        p.pooled_prompt_embeds.defined(),
        "If `prompt_embeds` are provided, `pooled_prompt_embeds` also have to be passed. "
        "Make sure to generate `pooled_prompt_embeds` from the same text encoder that was "
        "used to generate `prompt_embeds`.");
    e.prompt_embeds = p.prompt_embeds.to(DType::f32);
    e.pooled_prompt_embeds = p.pooled_prompt_embeds.to(DType::f32);
  } else {
    std::tie(e.prompt_embeds, e.pooled_prompt_embeds) =
        encode_texts(pairs, prompt_texts, max_length, p.clip_skip, w);
  }
  DIFFUSE_CHECK(e.prompt_embeds.dim() == 3 && e.prompt_embeds.size(0) == 1,
                "prompt_embeds must be [1, L, D], got ", shape_str(e.prompt_embeds.shape()));
  DIFFUSE_CHECK(e.pooled_prompt_embeds.dim() == 2 && e.pooled_prompt_embeds.size(0) == 1,
                "pooled_prompt_embeds must be [1, D], got ",
                shape_str(e.pooled_prompt_embeds.shape()));

  if (do_classifier_free_guidance) {
    if (p.negative_prompt_embeds.defined()) {
      DIFFUSE_CHECK(p.negative_pooled_prompt_embeds.defined(),
                    "If `negative_prompt_embeds` are provided, `negative_pooled_prompt_embeds` "
                    "also have to be passed. Make sure to generate `negative_pooled_prompt_embeds` "
                    "from the same text encoder that was used to generate "
                    "`negative_prompt_embeds`.");
      e.negative_prompt_embeds = p.negative_prompt_embeds.to(DType::f32);
      e.negative_pooled_prompt_embeds = p.negative_pooled_prompt_embeds.to(DType::f32);
    } else if (zero_negative) {
      e.negative_prompt_embeds = ops::mul(e.prompt_embeds, 0.0);
      e.negative_pooled_prompt_embeds = ops::mul(e.pooled_prompt_embeds, 0.0);
    } else {
      // The unconditional embeddings never get clip_skip (diffusers 0.31).
      std::tie(e.negative_prompt_embeds, e.negative_pooled_prompt_embeds) =
          encode_texts(pairs, negative_texts, e.prompt_embeds.size(1), std::nullopt, w);
    }
    DIFFUSE_CHECK(e.negative_prompt_embeds.shape() == e.prompt_embeds.shape(),
                  "`prompt_embeds` and `negative_prompt_embeds` must have the same shape, got ",
                  shape_str(e.prompt_embeds.shape()), " and ",
                  shape_str(e.negative_prompt_embeds.shape()));
    DIFFUSE_CHECK(e.negative_pooled_prompt_embeds.shape() == e.pooled_prompt_embeds.shape(),
                  "`pooled_prompt_embeds` and `negative_pooled_prompt_embeds` must have the same "
                  "shape");
    e.negative_prompt_embeds = pu::repeat_batch(e.negative_prompt_embeds, p.num_images_per_prompt);
    e.negative_pooled_prompt_embeds =
        pu::repeat_batch(e.negative_pooled_prompt_embeds, p.num_images_per_prompt);
  }
  e.prompt_embeds = pu::repeat_batch(e.prompt_embeds, p.num_images_per_prompt);
  e.pooled_prompt_embeds = pu::repeat_batch(e.pooled_prompt_embeds, p.num_images_per_prompt);
  return e;
}

// --- StableDiffusionXLPipeline -------------------------------------------------------------------

StableDiffusionXLPipeline::StableDiffusionXLPipeline(StableDiffusionXLComponents components)
    : components_(std::move(components)) {}

StableDiffusionXLPipeline StableDiffusionXLPipeline::from_pretrained(
    const std::filesystem::path& folder, const ModelOptions& options) {
  return StableDiffusionXLPipeline(StableDiffusionXLComponents::from_pretrained(folder, options));
}

PipelineOutput StableDiffusionXLPipeline::operator()(const StableDiffusionXLParams& p) {
  auto& c = components_;
  const int64_t vsf = c.vae_scale_factor();
  const int64_t default_size = c.unet->config().sample_size.value_or(128) * vsf;
  const int64_t height = p.height.value_or(default_size);
  const int64_t width = p.width.value_or(default_size);
  const SizeHW original_size = p.original_size.value_or(SizeHW{height, width});
  const SizeHW target_size = p.target_size.value_or(SizeHW{height, width});

  // 1. Check inputs.
  pu::check_inputs(p, height, width);
  const int64_t batch = p.num_images_per_prompt;
  const bool cfg = p.guidance_scale > 1.0 && !c.unet->config().time_cond_proj_dim;

  // 2. Encode the prompt.
  const XLPromptEmbeds embeds = encode_prompt(c, p, cfg);

  // 3. Timesteps.
  pu::retrieve_timesteps(*c.scheduler, p);

  // 4. Initial latents, scaled by the scheduler's init_noise_sigma.
  pu::Generators generators(p.seeds, batch);
  const Shape shape{batch, c.unet->config().in_channels, height / vsf, width / vsf};
  Tensor latents = pu::prepare_latents(*c.scheduler, p.latents, shape, generators);

  // 5. Added conditioning: pooled text embeddings and the micro-conditioning time ids.
  const int64_t projection_dim = c.text_encoder_2->config().projection_dim;
  const Tensor add_time_ids =
      pu::xl_time_ids(*c.unet, projection_dim, original_size, p.crops_coords_top_left, target_size);
  Tensor negative_add_time_ids = add_time_ids;
  if (p.negative_original_size && p.negative_target_size)
    negative_add_time_ids = pu::xl_time_ids(*c.unet, projection_dim, *p.negative_original_size,
                                            p.negative_crops_coords_top_left.value_or(SizeHW{0, 0}),
                                            *p.negative_target_size);
  UNet2DConditionInputs added;
  if (cfg) {
    added.text_embeds =
        ops::concat({embeds.negative_pooled_prompt_embeds, embeds.pooled_prompt_embeds}, 0);
    // diffusers: torch.cat([negative, positive]).repeat(batch, 1), i.e. the rows alternate
    // negative/positive while the latent batch is [negatives..., positives...]. It only matters
    // when the negative time ids differ and num_images_per_prompt > 1; kept for identical images.
    added.time_ids = pu::repeat_batch(ops::concat({negative_add_time_ids, add_time_ids}, 0), batch);
  } else {
    added.text_embeds = embeds.pooled_prompt_embeds;
    added.time_ids = pu::repeat_batch(add_time_ids, batch);
  }

  // 6. Denoising loop, stopped early by denoising_end (ensemble of expert denoisers).
  const std::vector<double> timesteps =
      pu::cut_denoising_end(*c.scheduler, c.scheduler->timesteps(), p.denoising_end);
  latents =
      pu::denoise(*c.unet, *c.scheduler, p, latents, timesteps,
                  {embeds.prompt_embeds, embeds.negative_prompt_embeds}, generators, {}, added);

  // 7. Decode.
  return pu::finish(*c.vae, p, latents, generators);
}

}  // namespace diffuse
