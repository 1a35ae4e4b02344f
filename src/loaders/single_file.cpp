// from_single_file for Stable Diffusion 1.x / 2.x (diffusers loaders/single_file.py +
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
    case SingleFileModelType::xl_refiner:
    case SingleFileModelType::xl_inpaint:
      DIFFUSE_FAIL("SDXL single files (", single_file_model_type_name(type),
                   ") are detected but the SDXL pipeline is not implemented yet");
  }
  if (prediction_type) c.scheduler["prediction_type"] = *prediction_type;
  return c;
}

StableDiffusionComponents load_single_file_models(const std::filesystem::path& path,
                                                  const SingleFileOptions& options) {
  const std::shared_ptr<const TensorSource> ckpt = open_tensor_source(path);
  const std::string file = path.string();
  const SingleFileModelType type = infer_single_file_model_type(*ckpt);
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
  DIFFUSE_CHECK(type != SingleFileModelType::xl_base && type != SingleFileModelType::xl_refiner &&
                    type != SingleFileModelType::xl_inpaint,
                file, ": SDXL single files (", single_file_model_type_name(type),
                ") are detected but the SDXL pipeline is not implemented yet");

  StableDiffusionComponents c;
  const ModelOptions& mo = options.model;
  // 1. UNet.
  {
    const auto config = UNet2DConditionConfig::from_json(cfg.unet);
    const loaders::KeyMap map = loaders::unet_key_map(config);
    const LdmNameFn name = [&](const std::string& d) {
      const auto l = map.to_ldm(d, nullptr);
      return l ? kUnetPrefix + *l : "(no LDM name for " + d + ")";
    };
    c.unet = load_component<UNet2DConditionModel, UNet2DConditionConfig>(
        cfg.unet, ldm_unet_source(ckpt, config, kUnetPrefix), "unet", file, name, mo);
  }
  // 2. VAE.
  {
    DIFFUSE_CHECK(has_prefix(*ckpt, kVaePrefix), file, ": no VAE in this checkpoint (no '",
                  kVaePrefix, "*' tensors)");
    const auto config = AutoencoderKLConfig::from_json(cfg.vae);
    const loaders::KeyMap map = loaders::vae_key_map(config);
    const LdmNameFn name = [&](const std::string& d) {
      const auto l = map.to_ldm(d, nullptr);
      return l ? kVaePrefix + *l : "(no LDM name for " + d + ")";
    };
    c.vae = load_component<AutoencoderKL, AutoencoderKLConfig>(
        cfg.vae, ldm_vae_source(ckpt, config, kVaePrefix), "vae", file, name, mo);
  }
  // 3. Text encoder: CLIP (SD 1.x) or OpenCLIP (SD 2.x), told apart by their keys.
  {
    const auto config = CLIPTextConfig::from_json(cfg.text_encoder);
    if (has_prefix(*ckpt, kOpenClipPrefix)) {
      const LdmNameFn name = [](const std::string& d) {
        const auto l = open_clip_name(d);
        return l ? kOpenClipPrefix + l->name : "(no OpenCLIP name for " + d + ")";
      };
      c.text_encoder = load_component<CLIPTextModel, CLIPTextConfig>(
          cfg.text_encoder, open_clip_source(ckpt, config, kOpenClipPrefix), "text_encoder", file,
          name, mo);
    } else {
      DIFFUSE_CHECK(has_prefix(*ckpt, kClipPrefix), file,
                    ": no text encoder in this checkpoint (neither '", kClipPrefix,
                    "*' (SD 1.x CLIP) nor '", kOpenClipPrefix, "*' (SD 2.x OpenCLIP) tensors)");
      const LdmNameFn name = [](const std::string& d) { return kClipPrefix + d; };
      c.text_encoder = load_component<CLIPTextModel, CLIPTextConfig>(
          cfg.text_encoder, ldm_clip_source(ckpt, kClipPrefix), "text_encoder", file, name, mo);
    }
  }
  // 4. Scheduler.
  DIFFUSE_CHECK(cfg.scheduler.contains("_class_name") && cfg.scheduler["_class_name"].is_string(),
                file, ": the scheduler config has no \"_class_name\"");
  c.scheduler = make_scheduler(cfg.scheduler["_class_name"].get<std::string>(), cfg.scheduler);
  return c;
}

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
  // Text encoder.
  const auto src = open_tensor_source(folder / "text_encoder");
  if (layout == LdmTextEncoderLayout::clip) {
    for (const TensorInfo& i : src->tensors())
      out.emplace_back(kClipPrefix + i.name, src->get(i.name));
    return out;
  }
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
      out.emplace_back(kOpenClipPrefix + l->name,
                       l->transposed ? t.transpose(0, 1).contiguous() : t);
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
    out.emplace_back(kOpenClipPrefix + name, t);
  }
  return out;
}

void save_single_file(const std::filesystem::path& folder, const std::filesystem::path& out,
                      LdmTextEncoderLayout layout) {
  save_safetensors(out, diffusers_to_ldm(folder, layout));
}

}  // namespace diffuse
