// from_single_file for Stable Diffusion 1.x / 2.x / XL (diffusers loaders/single_file.py +
// single_file_utils.py): detect the architecture, pick its configs, map the keys, check every
// tensor against the model, build the components. And the reverse: a diffusers folder written
// in the original layout.
#include "diffuse/loaders/single_file.h"

#include <array>
#include <functional>
#include <map>

#include "diffuse/core/log.h"
#include "diffuse/formats/config.h"
#include "diffuse/formats/safetensors.h"
#include "diffuse/loaders/random_weights.h"
#include "diffuse/schedulers/scheduler.h"
#include "src/loaders/default_configs.h"
#include "src/loaders/remapped_source.h"

namespace diffuse {
namespace {

constexpr const char* kUnetPrefix = "model.diffusion_model.";
constexpr const char* kVaePrefix = "first_stage_model.";
constexpr const char* kClipPrefix = "cond_stage_model.transformer.";
constexpr const char* kOpenClipPrefix = "cond_stage_model.model.";
// SDXL (generative-models' GeneralConditioner): base / inpainting CLIP ViT-L + OpenCLIP bigG,
// refiner bigG alone.
constexpr const char* kXlClipPrefix = "conditioner.embedders.0.transformer.";
constexpr const char* kXlOpenClipPrefix = "conditioner.embedders.1.model.";
constexpr const char* kXlRefinerOpenClipPrefix = "conditioner.embedders.0.model.";

nlohmann::json parse(const char* text) {
  return nlohmann::json::parse(text);
}

bool starts_with(std::string_view s, std::string_view p) {
  return s.substr(0, p.size()) == p;
}

bool has_prefix(const TensorSource& src, std::string_view prefix) {
  for (const TensorInfo& i : src.tensors())
    if (starts_with(i.name, prefix)) return true;
  return false;
}

// The LDM name of a diffusers text-encoder tensor in the OpenCLIP layout, and which third of a
// fused in_proj it is (-1: not fused). nullopt when it has no OpenCLIP counterpart.
struct OpenClipName {
  std::string name;
  int part = -1;
  bool transposed = false;
};
std::optional<OpenClipName> open_clip_name(std::string_view d) {
  if (d == "text_model.embeddings.token_embedding.weight")
    return OpenClipName{"token_embedding.weight"};
  if (d == "text_model.embeddings.position_embedding.weight")
    return OpenClipName{"positional_embedding"};
  if (d == "text_model.final_layer_norm.weight") return OpenClipName{"ln_final.weight"};
  if (d == "text_model.final_layer_norm.bias") return OpenClipName{"ln_final.bias"};
  if (d == "text_projection.weight") return OpenClipName{"text_projection", -1, true};
  constexpr std::string_view layers = "text_model.encoder.layers.";
  if (!starts_with(d, layers)) return std::nullopt;
  const std::string_view tail = d.substr(layers.size());
  const auto dot = tail.find('.');
  if (dot == std::string_view::npos) return std::nullopt;
  const std::string block = "transformer.resblocks." + std::string(tail.substr(0, dot)) + ".";
  const std::string_view module = tail.substr(dot + 1);
  static const std::pair<std::string_view, std::string_view> renames[] = {
      {"layer_norm1.", "ln_1."},
      {"layer_norm2.", "ln_2."},
      {"mlp.fc1.", "mlp.c_fc."},
      {"mlp.fc2.", "mlp.c_proj."},
      {"self_attn.out_proj.", "attn.out_proj."}};
  for (const auto& [dif, ldm] : renames)
    if (starts_with(module, dif))
      return OpenClipName{block + std::string(ldm) + std::string(module.substr(dif.size()))};
  const char* qkv[] = {"self_attn.q_proj.", "self_attn.k_proj.", "self_attn.v_proj."};
  for (int k = 0; k < 3; ++k) {
    if (!starts_with(module, qkv[k])) continue;
    const std::string_view param = module.substr(std::string_view(qkv[k]).size());
    if (param == "weight") return OpenClipName{block + "attn.in_proj_weight", k};
    if (param == "bias") return OpenClipName{block + "attn.in_proj_bias", k};
  }
  return std::nullopt;
}

using LdmNameFn = std::function<std::string(const std::string&)>;

// Checks every tensor the model of `config` loads against `mapped`, before anything is loaded,
// so that an error names the key of the file rather than only the diffusers name.
void check_component(const nlohmann::json& config, const TensorSource& mapped,
                     const std::string& component, const std::string& file,
                     const LdmNameFn& ldm_name, DType dtype) {
  for (const SafetensorsTensorSpec& s : model_weight_specs(config, dtype)) {
    const TensorInfo* i = mapped.find(s.name);
    DIFFUSE_CHECK(i != nullptr, file, ": missing tensor '", ldm_name(s.name), "' (the ", component,
                  " needs it as '", s.name, "' with shape ", shape_str(s.shape),
                  "); the checkpoint is incomplete or not a Stable Diffusion ",
                  "model of this architecture");
    DIFFUSE_CHECK(i->shape == s.shape, file, ": tensor '", ldm_name(s.name), "' has shape ",
                  shape_str(i->shape), " but the ", component, " expects ", shape_str(s.shape),
                  " for '", s.name, "'; the checkpoint does not match the config (pass the ",
                  "matching diffusers config folder)");
  }
}

template <typename Model, typename Config>
std::shared_ptr<Model> load_component(const nlohmann::json& config,
                                      std::shared_ptr<TensorSource> mapped,
                                      const std::string& component, const std::string& file,
                                      const LdmNameFn& ldm_name, const ModelOptions& options) {
  check_component(config, *mapped, component, file, ldm_name, options.weight_dtype);
  WeightLoader w(std::move(mapped), options.weight_dtype);
  auto model = std::make_shared<Model>(Config::from_json(config), w, options.compute_dtype);
  w.finish();
  return model;
}

SingleFileConfigs configs_from_folder(const std::filesystem::path& folder) {
  SingleFileConfigs c;
  c.unet = read_json_file(folder / "unet" / "config.json");
  c.vae = read_json_file(folder / "vae" / "config.json");
  c.text_encoder = read_json_file(folder / "text_encoder" / "config.json");
  c.scheduler = read_json_file(folder / "scheduler" / "scheduler_config.json");
  return c;
}

// The SDXL pipeline flags of a model_index.json; keys it lacks keep their value in `c`.
void read_xl_flags(const nlohmann::json& index, const std::string& where, SingleFileConfigs& c) {
  for (const auto& [key, flag] :
       {std::pair{"force_zeros_for_empty_prompt", &c.force_zeros_for_empty_prompt},
        std::pair{"requires_aesthetics_score", &c.requires_aesthetics_score}}) {
    if (!index.contains(key) || index[key].is_null()) continue;
    DIFFUSE_CHECK(index[key].is_boolean(), where, ": \"", key, "\" must be true or false, got ",
                  index[key].dump());
    *flag = index[key].get<bool>();
  }
}

// The configs of an SDXL diffusers folder (from_single_file(config=...)) for a file of `type`:
// the refiner's bigG config is text_encoder_2/config.json, or text_encoder/config.json in
// folders that name the refiner's only encoder text_encoder. The flags start from the built-in
// ones of `type` and are overridden by the folder's model_index.json when it has them.
SingleFileConfigs xl_configs_from_folder(const std::filesystem::path& folder,
                                         SingleFileModelType type) {
  const SingleFileConfigs defaults = default_single_file_configs(type);
  SingleFileConfigs c;
  c.force_zeros_for_empty_prompt = defaults.force_zeros_for_empty_prompt;
  c.requires_aesthetics_score = defaults.requires_aesthetics_score;
  c.unet = read_json_file(folder / "unet" / "config.json");
  c.vae = read_json_file(folder / "vae" / "config.json");
  c.scheduler = read_json_file(folder / "scheduler" / "scheduler_config.json");
  const auto te2 = folder / "text_encoder_2" / "config.json";
  if (type == SingleFileModelType::xl_refiner) {
    c.text_encoder_2 = read_json_file(
        std::filesystem::exists(te2) ? te2 : folder / "text_encoder" / "config.json");
  } else {
    c.text_encoder = read_json_file(folder / "text_encoder" / "config.json");
    c.text_encoder_2 = read_json_file(te2);
  }
  if (std::filesystem::exists(folder / "model_index.json"))
    read_xl_flags(read_json_file(folder / "model_index.json"),
                  (folder / "model_index.json").string(), c);
  return c;
}

// --- components -------------------------------------------------------------------------------

std::shared_ptr<UNet2DConditionModel> load_unet(const std::shared_ptr<const TensorSource>& ckpt,
                                                const nlohmann::json& json, const std::string& file,
                                                const ModelOptions& mo) {
  const auto config = UNet2DConditionConfig::from_json(json);
  const loaders::KeyMap map = loaders::unet_key_map(config);
  const LdmNameFn name = [&](const std::string& d) {
    const auto l = map.to_ldm(d, nullptr);
    return l ? kUnetPrefix + *l : "(no LDM name for " + d + ")";
  };
  return load_component<UNet2DConditionModel, UNet2DConditionConfig>(
      json, ldm_unet_source(ckpt, config, kUnetPrefix), "unet", file, name, mo);
}

std::shared_ptr<AutoencoderKL> load_vae(const std::shared_ptr<const TensorSource>& ckpt,
                                        const nlohmann::json& json, const std::string& file,
                                        const ModelOptions& mo) {
  DIFFUSE_CHECK(has_prefix(*ckpt, kVaePrefix), file, ": no VAE in this checkpoint (no '",
                kVaePrefix, "*' tensors)");
  const auto config = AutoencoderKLConfig::from_json(json);
  const loaders::KeyMap map = loaders::vae_key_map(config);
  const LdmNameFn name = [&](const std::string& d) {
    const auto l = map.to_ldm(d, nullptr);
    return l ? kVaePrefix + *l : "(no LDM name for " + d + ")";
  };
  return load_component<AutoencoderKL, AutoencoderKLConfig>(
      json, ldm_vae_source(ckpt, config, kVaePrefix), "vae", file, name, mo);
}

// A transformers-layout CLIP under `prefix`.
std::shared_ptr<CLIPTextModel> load_clip(const std::shared_ptr<const TensorSource>& ckpt,
                                         const nlohmann::json& json, const std::string& prefix,
                                         const std::string& component, const std::string& file,
                                         const ModelOptions& mo) {
  const LdmNameFn name = [&](const std::string& d) { return prefix + d; };
  return load_component<CLIPTextModel, CLIPTextConfig>(json, ldm_clip_source(ckpt, prefix),
                                                       component, file, name, mo);
}

// An OpenCLIP text tower under `prefix`.
std::shared_ptr<CLIPTextModel> load_open_clip(const std::shared_ptr<const TensorSource>& ckpt,
                                              const nlohmann::json& json, const std::string& prefix,
                                              const std::string& component, const std::string& file,
                                              const ModelOptions& mo) {
  const auto config = CLIPTextConfig::from_json(json);
  const LdmNameFn name = [&](const std::string& d) {
    const auto l = open_clip_name(d);
    return l ? prefix + l->name : "(no OpenCLIP name for " + d + ")";
  };
  return load_component<CLIPTextModel, CLIPTextConfig>(json, open_clip_source(ckpt, config, prefix),
                                                       component, file, name, mo);
}

std::shared_ptr<Scheduler> load_scheduler(const nlohmann::json& json, const std::string& file) {
  DIFFUSE_CHECK(json.contains("_class_name") && json["_class_name"].is_string(), file,
                ": the scheduler config has no \"_class_name\"");
  return make_scheduler(json["_class_name"].get<std::string>(), json);
}

// The LDM names of an OpenCLIP text encoder folder under `prefix`, q/k/v fused into in_proj and
// text_projection transposed back to OpenCLIP's [hidden, proj].
void append_open_clip(const std::filesystem::path& folder, const std::string& prefix,
                      std::vector<std::pair<std::string, Tensor>>& out) {
  const auto src = open_tensor_source(folder);
  std::map<std::string, std::array<Tensor, 3>> fused;
  for (const TensorInfo& i : src->tensors()) {
    if (i.name == "text_model.embeddings.position_ids") continue;  // a buffer OpenCLIP lacks
    const auto l = open_clip_name(i.name);
    DIFFUSE_CHECK(l.has_value(), src->path(), ": text encoder tensor '", i.name,
                  "' has no name in the OpenCLIP layout");
    Tensor t = src->get(i.name);
    if (l->part >= 0) {
      fused[l->name][static_cast<std::size_t>(l->part)] = t;
    } else {
      out.emplace_back(prefix + l->name, l->transposed ? t.transpose(0, 1).contiguous() : t);
    }
  }
  for (auto& [name, parts] : fused) {
    for (const Tensor& p : parts)
      DIFFUSE_CHECK(p.defined(), src->path(), ": '", name, "' needs q, k and v projections");
    Shape shape = parts[0].shape();
    const int64_t rows = shape[0];
    shape[0] = 3 * rows;
    Tensor t = Tensor::empty(shape, parts[0].dtype());
    for (int64_t k = 0; k < 3; ++k)
      t.narrow(0, k * rows, rows).copy_(parts[static_cast<std::size_t>(k)]);
    out.emplace_back(prefix + name, t);
  }
}

void append_clip(const std::filesystem::path& folder, const std::string& prefix,
                 std::vector<std::pair<std::string, Tensor>>& out) {
  const auto src = open_tensor_source(folder);
  for (const TensorInfo& i : src->tensors()) out.emplace_back(prefix + i.name, src->get(i.name));
}

}  // namespace

std::string infer_prediction_type(SingleFileModelType type, const TensorSource& checkpoint) {
  if (type != SingleFileModelType::v2) return "epsilon";
  // diffusers: "stable diffusion 2 base" is recognized only by its training step count.
  const auto it = checkpoint.metadata().find("global_step");
  return it != checkpoint.metadata().end() && it->second == "875000" ? "epsilon" : "v_prediction";
}

SingleFileConfigs default_single_file_configs(SingleFileModelType type,
                                              std::optional<std::string> prediction_type) {
  using namespace loaders;
  SingleFileConfigs c;
  switch (type) {
    case SingleFileModelType::v1:
    case SingleFileModelType::inpainting:
      c.unet = parse(type == SingleFileModelType::v1 ? kSd15Unet : kSd15InpaintUnet);
      c.vae = parse(kSd15Vae);
      c.text_encoder = parse(kSd15TextEncoder);
      c.scheduler = parse(kSd15Scheduler);
      break;
    case SingleFileModelType::v2:
      c.unet = parse(kSd21Unet);
      c.vae = parse(kSd21Vae);
      c.text_encoder = parse(kSd21TextEncoder);
      c.scheduler = parse(kSd21Scheduler);
      // SD 2 base (512 px) is the epsilon model of the v2 family; 2.0/2.1 768 are v_prediction.
      if (prediction_type && *prediction_type == "epsilon") {
        c.unet["sample_size"] = 64;
        c.vae["sample_size"] = 512;
      }
      break;
    case SingleFileModelType::inpainting_v2:
      c.unet = parse(kSd2InpaintUnet);
      c.vae = parse(kSd21Vae);
      c.vae["sample_size"] = 512;
      c.text_encoder = parse(kSd21TextEncoder);
      c.scheduler = parse(kSd2InpaintScheduler);
      break;
    case SingleFileModelType::xl_base:
      c.unet = parse(kSdxlBaseUnet);
      c.vae = parse(kSdxlVae);
      c.text_encoder = parse(kSdxlBaseTextEncoder);
      c.text_encoder_2 = parse(kSdxlTextEncoder2);
      c.scheduler = parse(kSdxlScheduler);
      read_xl_flags(parse(kSdxlBaseModelIndex), "built-in SDXL model_index.json", c);
      break;
    case SingleFileModelType::xl_refiner:
      c.unet = parse(kSdxlRefinerUnet);
      c.vae = parse(kSdxlVae);
      c.text_encoder_2 = parse(kSdxlTextEncoder2);
      c.scheduler = parse(kSdxlScheduler);
      read_xl_flags(parse(kSdxlRefinerModelIndex), "built-in SDXL refiner model_index.json", c);
      break;
    case SingleFileModelType::xl_inpaint:
      c.unet = parse(kSdxlInpaintUnet);
      c.vae = parse(kSdxlInpaintVae);
      c.text_encoder = parse(kSdxlInpaintTextEncoder);
      c.text_encoder_2 = parse(kSdxlInpaintTextEncoder2);
      c.scheduler = parse(kSdxlScheduler);
      read_xl_flags(parse(kSdxlInpaintModelIndex), "built-in SDXL inpainting model_index.json", c);
      break;
  }
  if (prediction_type) c.scheduler["prediction_type"] = *prediction_type;
  return c;
}

StableDiffusionComponents load_single_file_models(const std::filesystem::path& path,
                                                  const SingleFileOptions& options) {
  const std::shared_ptr<const TensorSource> ckpt = open_tensor_source(path);
  const std::string file = path.string();
  const SingleFileModelType type = infer_single_file_model_type(*ckpt);
  DIFFUSE_CHECK(!is_sdxl(type), file, ": this is an ", single_file_model_type_description(type),
                " single file (", single_file_model_type_name(type),
                "); load it with load_single_file_xl_models() / from_single_file_xl(), which "
                "give StableDiffusionXLComponents");
  SingleFileConfigs cfg;
  if (!options.config.empty()) {
    cfg = configs_from_folder(options.config);
    if (options.prediction_type) cfg.scheduler["prediction_type"] = *options.prediction_type;
  } else {
    auto prediction = options.prediction_type;
    if (!prediction && type == SingleFileModelType::v2)
      prediction = infer_prediction_type(type, *ckpt);
    cfg = default_single_file_configs(type, prediction);
    log_info("single file " + file + ": detected model type " +
             std::string(single_file_model_type_name(type)));
  }

  StableDiffusionComponents c;
  const ModelOptions& mo = options.model;
  // 1. UNet.
  c.unet = load_unet(ckpt, cfg.unet, file, mo);
  // 2. VAE.
  c.vae = load_vae(ckpt, cfg.vae, file, mo);
  // 3. Text encoder: CLIP (SD 1.x) or OpenCLIP (SD 2.x), told apart by their keys.
  if (has_prefix(*ckpt, kOpenClipPrefix)) {
    c.text_encoder =
        load_open_clip(ckpt, cfg.text_encoder, kOpenClipPrefix, "text_encoder", file, mo);
  } else {
    DIFFUSE_CHECK(has_prefix(*ckpt, kClipPrefix), file,
                  ": no text encoder in this checkpoint (neither '", kClipPrefix,
                  "*' (SD 1.x CLIP) nor '", kOpenClipPrefix, "*' (SD 2.x OpenCLIP) tensors)");
    c.text_encoder = load_clip(ckpt, cfg.text_encoder, kClipPrefix, "text_encoder", file, mo);
  }
  // 4. Scheduler.
  c.scheduler = load_scheduler(cfg.scheduler, file);
  return c;
}

namespace {

StableDiffusionXLComponents load_xl_models(const std::shared_ptr<const TensorSource>& ckpt,
                                           const std::string& file,
                                           const SingleFileOptions& options) {
  const SingleFileModelType type = infer_single_file_model_type(*ckpt);
  DIFFUSE_CHECK(is_sdxl(type), file, ": not an SDXL single file: it has neither '",
                kXlOpenClipPrefix, "*' (SDXL base / inpainting) nor '", kXlRefinerOpenClipPrefix,
                "*' (SDXL refiner) OpenCLIP bigG tensors, and is detected as ",
                single_file_model_type_description(type), " (", single_file_model_type_name(type),
                "); load it with load_single_file_models() / from_single_file()");
  SingleFileConfigs cfg;
  if (!options.config.empty()) {
    cfg = xl_configs_from_folder(options.config, type);
  } else {
    cfg = default_single_file_configs(type);
    log_info("single file " + file + ": detected model type " +
             std::string(single_file_model_type_name(type)));
  }
  if (options.prediction_type) cfg.scheduler["prediction_type"] = *options.prediction_type;
  DIFFUSE_CHECK(!cfg.text_encoder_2.is_null(), file,
                ": the SDXL config has no text_encoder_2 (the OpenCLIP bigG encoder)");
  DIFFUSE_CHECK(CLIPTextConfig::from_json(cfg.text_encoder_2).with_projection, file,
                ": SDXL's text_encoder_2 must be a CLIPTextModelWithProjection (its text_embeds "
                "condition the UNet), but its config's \"architectures\" is ",
                cfg.text_encoder_2.value("architectures", nlohmann::json()).dump());

  StableDiffusionXLComponents c;
  c.force_zeros_for_empty_prompt = cfg.force_zeros_for_empty_prompt;
  c.requires_aesthetics_score = cfg.requires_aesthetics_score;
  const ModelOptions& mo = options.model;
  // 1. UNet (SDXL's label_emb.0 is add_embedding: unet_key_map follows addition_embed_type).
  c.unet = load_unet(ckpt, cfg.unet, file, mo);
  // 2. VAE.
  c.vae = load_vae(ckpt, cfg.vae, file, mo);
  // 3. text_encoder: CLIP ViT-L (base / inpainting; the refiner has none).
  const bool refiner = type == SingleFileModelType::xl_refiner;
  if (!refiner && !cfg.text_encoder.is_null()) {
    DIFFUSE_CHECK(has_prefix(*ckpt, kXlClipPrefix), file,
                  ": no CLIP ViT-L text encoder in this SDXL checkpoint (no '", kXlClipPrefix,
                  "*' tensors)");
    c.text_encoder = load_clip(ckpt, cfg.text_encoder, kXlClipPrefix, "text_encoder", file, mo);
  }
  // 4. text_encoder_2: OpenCLIP bigG, every layer, with its projection (pooled text_embeds).
  const std::string prefix = refiner ? kXlRefinerOpenClipPrefix : kXlOpenClipPrefix;
  DIFFUSE_CHECK(has_prefix(*ckpt, prefix), file, ": no OpenCLIP bigG text encoder in this SDXL ",
                "checkpoint (no '", prefix, "*' tensors)");
  c.text_encoder_2 = load_open_clip(ckpt, cfg.text_encoder_2, prefix, "text_encoder_2", file, mo);
  // 5. Scheduler.
  c.scheduler = load_scheduler(cfg.scheduler, file);
  return c;
}

}  // namespace

StableDiffusionComponents from_single_file(const std::filesystem::path& path,
                                           const SingleFileOptions& options) {
  std::filesystem::path tokenizer = options.tokenizer;
  if (tokenizer.empty() && !options.config.empty()) tokenizer = options.config / "tokenizer";
  DIFFUSE_CHECK(!tokenizer.empty(), "from_single_file(", path.string(),
                "): single-file checkpoints do not contain the CLIP tokenizer vocabulary; pass "
                "the folder of a CLIP tokenizer (vocab.json + merges.txt, such as the tokenizer/ "
                "folder of a diffusers Stable Diffusion pipeline: SD 1.x and 2.x tokenizers "
                "differ in their padding token)");
  auto tok = std::make_shared<ClipTokenizer>(ClipTokenizer::from_folder(tokenizer));
  StableDiffusionComponents c = load_single_file_models(path, options);
  c.tokenizer = std::move(tok);
  return c;
}

StableDiffusionComponents from_single_file(const std::filesystem::path& path,
                                           const ModelOptions& options,
                                           const std::filesystem::path& tokenizer_folder) {
  SingleFileOptions o;
  o.model = options;
  o.tokenizer = tokenizer_folder;
  return from_single_file(path, o);
}

StableDiffusionXLComponents load_single_file_xl_models(const std::filesystem::path& path,
                                                       const SingleFileOptions& options) {
  return load_xl_models(open_tensor_source(path), path.string(), options);
}

StableDiffusionXLComponents from_single_file_xl(const std::filesystem::path& path,
                                                const SingleFileOptions& options) {
  const std::shared_ptr<const TensorSource> ckpt = open_tensor_source(path);
  const bool refiner = infer_single_file_model_type(*ckpt) == SingleFileModelType::xl_refiner;
  std::filesystem::path tokenizer = options.tokenizer;
  std::filesystem::path tokenizer_2 = options.tokenizer_2;
  if (!options.config.empty()) {
    if (tokenizer.empty()) tokenizer = options.config / "tokenizer";
    if (tokenizer_2.empty()) {
      tokenizer_2 = options.config / "tokenizer_2";
      // The refiner's only tokenizer may be named tokenizer/ (like its only text encoder).
      if (refiner && !std::filesystem::exists(tokenizer_2))
        tokenizer_2 = options.config / "tokenizer";
    }
  }
  DIFFUSE_CHECK(refiner || !tokenizer.empty(), "from_single_file_xl(", path.string(),
                "): single-file checkpoints do not contain the tokenizer vocabularies; pass the "
                "folder of text_encoder's CLIP tokenizer (vocab.json + merges.txt, such as the "
                "tokenizer/ folder of a diffusers SDXL pipeline) as `tokenizer`");
  DIFFUSE_CHECK(!tokenizer_2.empty(), "from_single_file_xl(", path.string(),
                "): single-file checkpoints do not contain the tokenizer vocabularies; pass the "
                "folder of text_encoder_2's tokenizer (the CLIP vocabulary with pad token \"!\", "
                "such as the tokenizer_2/ folder of a diffusers SDXL pipeline) as `tokenizer_2`");
  std::shared_ptr<ClipTokenizer> tok;
  if (!refiner) tok = std::make_shared<ClipTokenizer>(ClipTokenizer::from_folder(tokenizer));
  auto tok2 = std::make_shared<ClipTokenizer>(ClipTokenizer::from_folder(tokenizer_2));
  StableDiffusionXLComponents c = load_xl_models(ckpt, path.string(), options);
  c.tokenizer = std::move(tok);
  c.tokenizer_2 = std::move(tok2);
  return c;
}

// --- writing --------------------------------------------------------------------------------

std::vector<std::pair<std::string, Tensor>> diffusers_to_ldm(const std::filesystem::path& folder,
                                                             LdmTextEncoderLayout layout) {
  std::vector<std::pair<std::string, Tensor>> out;
  // UNet.
  {
    const auto config =
        UNet2DConditionConfig::from_json(read_json_file(folder / "unet" / "config.json"));
    const loaders::KeyMap map = loaders::unet_key_map(config);
    const auto src = open_tensor_source(folder / "unet");
    for (const TensorInfo& i : src->tensors()) {
      const auto l = map.to_ldm(i.name, nullptr);
      DIFFUSE_CHECK(l.has_value(), src->path(), ": unet tensor '", i.name,
                    "' has no name in the original LDM layout");
      out.emplace_back(kUnetPrefix + *l, src->get(i.name));
    }
  }
  // VAE (attention matrices back to 1x1 convs).
  {
    const auto config =
        AutoencoderKLConfig::from_json(read_json_file(folder / "vae" / "config.json"));
    const loaders::KeyMap map = loaders::vae_key_map(config);
    const auto src = open_tensor_source(folder / "vae");
    for (const TensorInfo& i : src->tensors()) {
      loaders::LeafKind leaf = loaders::LeafKind::plain;
      const auto l = map.to_ldm(i.name, &leaf);
      DIFFUSE_CHECK(l.has_value(), src->path(), ": vae tensor '", i.name,
                    "' has no name in the original LDM layout");
      Tensor t = src->get(i.name);
      if (leaf == loaders::LeafKind::vae_attention && t.dim() == 2)
        t = t.reshape({t.size(0), t.size(1), 1, 1});
      out.emplace_back(kVaePrefix + *l, t);
    }
  }
  // Text encoders.
  switch (layout) {
    case LdmTextEncoderLayout::clip:
      append_clip(folder / "text_encoder", kClipPrefix, out);
      break;
    case LdmTextEncoderLayout::open_clip:
      append_open_clip(folder / "text_encoder", kOpenClipPrefix, out);
      break;
    case LdmTextEncoderLayout::sdxl:
      append_clip(folder / "text_encoder", kXlClipPrefix, out);
      append_open_clip(folder / "text_encoder_2", kXlOpenClipPrefix, out);
      break;
    case LdmTextEncoderLayout::sdxl_refiner:
      append_open_clip(std::filesystem::exists(folder / "text_encoder_2")
                           ? folder / "text_encoder_2"
                           : folder / "text_encoder",
                       kXlRefinerOpenClipPrefix, out);
      break;
  }
  return out;
}

void save_single_file(const std::filesystem::path& folder, const std::filesystem::path& out,
                      LdmTextEncoderLayout layout) {
  save_safetensors(out, diffusers_to_ldm(folder, layout));
}

}  // namespace diffuse
