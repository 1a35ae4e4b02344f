// Key maps between the original LDM / SGM checkpoint layouts and diffusers names (diffusers
// loaders/single_file_utils.py: convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint,
// convert_ldm_clip_checkpoint, convert_open_clip_checkpoint, infer_diffusers_model_type).
#include <algorithm>
#include <array>
#include <utility>

#include "diffuse/core/error.h"
#include "diffuse/loaders/single_file.h"
#include "src/loaders/remapped_source.h"

namespace diffuse {
namespace loaders {

// --- RemappedTensorSource -----------------------------------------------------------------------

RemappedTensorSource::RemappedTensorSource(std::shared_ptr<const TensorSource> base,
                                           std::string description)
    : TensorSource(std::move(description)), base_(std::move(base)) {
  DIFFUSE_CHECK(base_ != nullptr, "RemappedTensorSource: the base source is null");
  format_ = std::string(base_->format()) + " (original layout)";
  metadata_ = base_->metadata();
}

void RemappedTensorSource::add_entry(const std::string& name, Remap r) {
  const TensorInfo& b = base_->info(r.base_name);
  TensorInfo i = b;
  i.name = name;
  i.file = b.file + " as '" + r.base_name + "'";
  switch (r.op) {
    case Remap::Op::none:
      break;
    case Remap::Op::reshape: {
      int64_t n = 1;
      for (const int64_t d : r.shape) n *= d;
      int64_t m = 1;
      for (const int64_t d : b.shape) m *= d;
      DIFFUSE_CHECK(n == m, path_, ": tensor '", r.base_name, "' of shape ", shape_str(b.shape),
                    " cannot be seen as ", shape_str(r.shape), " for '", name, "'");
      i.shape = r.shape;
      break;
    }
    case Remap::Op::narrow0:
      DIFFUSE_CHECK(
          !b.shape.empty() && r.start >= 0 && r.length >= 0 && r.start + r.length <= b.shape[0],
          path_, ": tensor '", r.base_name, "' of shape ", shape_str(b.shape), " has no rows [",
          r.start, ", ", r.start + r.length, ") for '", name, "'");
      i.shape[0] = r.length;
      break;
    case Remap::Op::transpose:
      DIFFUSE_CHECK(b.shape.size() == 2, path_, ": tensor '", r.base_name, "' of shape ",
                    shape_str(b.shape), " should be a matrix to give '", name, "'");
      std::swap(i.shape[0], i.shape[1]);
      break;
  }
  if (r.op != Remap::Op::none) {
    int64_t n = 1;
    for (const int64_t d : i.shape) n *= d;
    i.stored_bytes = static_cast<uint64_t>(n) * dtype_size(b.dtype);
  }
  add(std::move(i));
  remaps_.emplace(name, std::move(r));
}

const Remap* RemappedTensorSource::remap_of(std::string_view name) const {
  const auto it = remaps_.find(name);
  return it == remaps_.end() ? nullptr : &it->second;
}

Tensor RemappedTensorSource::apply(const Remap& r, Tensor t) const {
  switch (r.op) {
    case Remap::Op::none:
      return t;
    case Remap::Op::reshape:
      return t.reshape(r.shape);
    case Remap::Op::narrow0:
      return t.narrow(0, r.start, r.length);
    // Linear weights are used as [out, in] row-major by the kernels: materialize it.
    case Remap::Op::transpose:
      return t.transpose(0, 1).contiguous();
  }
  return t;
}

Tensor RemappedTensorSource::load(const TensorInfo& info) const {
  const Remap& r = remaps_.find(info.name)->second;
  return apply(r, base_->get(r.base_name));
}

Tensor RemappedTensorSource::load_as(const TensorInfo& info, DType dtype) const {
  const Remap& r = remaps_.find(info.name)->second;
  return apply(r, base_->get(r.base_name, dtype));
}

// --- KeyMap ---------------------------------------------------------------------------------

namespace {

using Renames = std::vector<std::pair<std::string_view, std::string_view>>;

// (LDM, diffusers) module names inside a block (renew_resnet_paths, renew_vae_resnet_paths,
// renew_vae_attention_paths).
const Renames& leaf_renames(LeafKind k) {
  static const Renames none;
  static const Renames unet_resnet = {
      {"in_layers.0", "norm1"},          {"in_layers.2", "conv1"},
      {"out_layers.0", "norm2"},         {"out_layers.3", "conv2"},
      {"emb_layers.1", "time_emb_proj"}, {"skip_connection", "conv_shortcut"}};
  static const Renames vae_resnet = {{"nin_shortcut", "conv_shortcut"}};
  static const Renames vae_attention = {{"norm", "group_norm"},
                                        {"q", "to_q"},
                                        {"k", "to_k"},
                                        {"v", "to_v"},
                                        {"proj_out", "to_out.0"}};
  switch (k) {
    case LeafKind::plain:
      return none;
    case LeafKind::unet_resnet:
      return unet_resnet;
    case LeafKind::vae_resnet:
      return vae_resnet;
    case LeafKind::vae_attention:
      return vae_attention;
  }
  return none;
}

// Renames the module part of `rest` ("in_layers.0.weight" -> "norm1.weight"); the parameter
// name (last segment) is kept.
std::string rename_leaf(std::string_view rest, LeafKind k, bool to_diffusers) {
  const auto dot = rest.rfind('.');
  if (dot == std::string_view::npos) return std::string(rest);
  const std::string_view module = rest.substr(0, dot);
  for (const auto& [ldm, dif] : leaf_renames(k)) {
    if (module == (to_diffusers ? ldm : dif)) {
      return std::string(to_diffusers ? dif : ldm) + std::string(rest.substr(dot));
    }
  }
  return std::string(rest);
}

}  // namespace

void KeyMap::add(const std::string& ldm, const std::string& diffusers, LeafKind leaf) {
  by_ldm_[ldm] = Rule{diffusers, leaf};
  by_diffusers_[diffusers] = Rule{ldm, leaf};
}

std::optional<std::string> KeyMap::to_diffusers(std::string_view ldm_key, LeafKind* leaf) const {
  std::size_t end = ldm_key.size();
  while (end > 0) {
    end = ldm_key.rfind('.', end - 1);
    if (end == std::string_view::npos || end == 0) return std::nullopt;
    const auto it = by_ldm_.find(ldm_key.substr(0, end));
    if (it != by_ldm_.end()) {
      if (leaf) *leaf = it->second.leaf;
      return it->second.target + "." + rename_leaf(ldm_key.substr(end + 1), it->second.leaf, true);
    }
  }
  return std::nullopt;
}

std::optional<std::string> KeyMap::to_ldm(std::string_view diffusers_key, LeafKind* leaf) const {
  std::size_t end = diffusers_key.size();
  while (end > 0) {
    end = diffusers_key.rfind('.', end - 1);
    if (end == std::string_view::npos || end == 0) return std::nullopt;
    const auto it = by_diffusers_.find(diffusers_key.substr(0, end));
    if (it != by_diffusers_.end()) {
      if (leaf) *leaf = it->second.leaf;
      return it->second.target + "." +
             rename_leaf(diffusers_key.substr(end + 1), it->second.leaf, false);
    }
  }
  return std::nullopt;
}

// --- the tables -----------------------------------------------------------------------------

namespace {

std::string cat(std::initializer_list<std::string_view> parts) {
  std::string s;
  for (const auto p : parts) s += p;
  return s;
}
std::string num(int64_t v) {
  return std::to_string(v);
}

// LDM's num_res_blocks: one count for every block (the SD, SD 2 and SDXL layouts).
int64_t uniform_layers_per_block(const IntOrList& l, std::size_t blocks) {
  DIFFUSE_CHECK(!l.values.empty(), "UNet2DConditionModel: layers_per_block is empty");
  for (std::size_t i = 0; i < blocks && i < l.values.size(); ++i)
    DIFFUSE_CHECK(l.at(i, blocks, "layers_per_block") == l.values[0],
                  "single-file UNet: layers_per_block differs between blocks (", l.values[0],
                  " and ", l.values[i], "), which the LDM layout cannot express");
  return l.values[0];
}

}  // namespace

KeyMap unet_key_map(const UNet2DConditionConfig& c) {
  KeyMap m;
  m.add("time_embed.0", "time_embedding.linear_1");
  m.add("time_embed.2", "time_embedding.linear_2");
  // SDXL's pooled text + time ids embedding, or a timestep/projection class embedding: both are
  // label_emb.0 in LDM (convert_ldm_unet_checkpoint).
  if (c.addition_embed_type && *c.addition_embed_type == "text_time") {
    m.add("label_emb.0.0", "add_embedding.linear_1");
    m.add("label_emb.0.2", "add_embedding.linear_2");
  } else if (c.class_embed_type &&
             (*c.class_embed_type == "timestep" || *c.class_embed_type == "projection")) {
    m.add("label_emb.0.0", "class_embedding.linear_1");
    m.add("label_emb.0.2", "class_embedding.linear_2");
  }
  m.add("input_blocks.0.0", "conv_in");
  m.add("out.0", "conv_norm_out");
  m.add("out.2", "conv_out");

  const auto n = static_cast<int64_t>(c.down_block_types.size());
  const int64_t lpb = uniform_layers_per_block(c.layers_per_block, c.down_block_types.size());
  const auto cross = [](const std::string& t) { return t.rfind("CrossAttn", 0) == 0; };
  for (int64_t b = 0; b < n; ++b) {
    const std::string down = cat({"down_blocks.", num(b)});
    for (int64_t l = 0; l < lpb; ++l) {
      const std::string in = cat({"input_blocks.", num(1 + b * (lpb + 1) + l)});
      m.add(in + ".0", cat({down, ".resnets.", num(l)}), LeafKind::unet_resnet);
      if (cross(c.down_block_types[b])) m.add(in + ".1", cat({down, ".attentions.", num(l)}));
    }
    if (b + 1 < n)
      m.add(cat({"input_blocks.", num(1 + b * (lpb + 1) + lpb), ".0.op"}),
            down + ".downsamplers.0.conv");
  }
  if (c.mid_block_type) {
    if (c.mid_block_type->find("CrossAttn") != std::string::npos) {
      m.add("middle_block.0", "mid_block.resnets.0", LeafKind::unet_resnet);
      m.add("middle_block.1", "mid_block.attentions.0");
      m.add("middle_block.2", "mid_block.resnets.1", LeafKind::unet_resnet);
    } else {
      m.add("middle_block.0", "mid_block.resnets.0", LeafKind::unet_resnet);
      m.add("middle_block.1", "mid_block.resnets.1", LeafKind::unet_resnet);
    }
  }
  const auto nu = static_cast<int64_t>(c.up_block_types.size());
  for (int64_t b = 0; b < nu; ++b) {
    const std::string up = cat({"up_blocks.", num(b)});
    const bool attn = cross(c.up_block_types[b]);
    for (int64_t l = 0; l <= lpb; ++l) {
      const std::string out = cat({"output_blocks.", num(b * (lpb + 1) + l)});
      m.add(out + ".0", cat({up, ".resnets.", num(l)}), LeafKind::unet_resnet);
      if (attn) m.add(out + ".1", cat({up, ".attentions.", num(l)}));
      if (l == lpb && b + 1 < nu)
        m.add(out + (attn ? ".2.conv" : ".1.conv"), up + ".upsamplers.0.conv");
    }
  }
  return m;
}

KeyMap vae_key_map(const AutoencoderKLConfig& c) {
  KeyMap m;
  for (const char* part : {"encoder", "decoder"}) {
    const std::string p = part;
    m.add(p + ".conv_in", p + ".conv_in");
    m.add(p + ".conv_out", p + ".conv_out");
    m.add(p + ".norm_out", p + ".conv_norm_out");
    m.add(p + ".mid.block_1", p + ".mid_block.resnets.0", LeafKind::vae_resnet);
    m.add(p + ".mid.block_2", p + ".mid_block.resnets.1", LeafKind::vae_resnet);
    m.add(p + ".mid.attn_1", p + ".mid_block.attentions.0", LeafKind::vae_attention);
  }
  m.add("quant_conv", "quant_conv");
  m.add("post_quant_conv", "post_quant_conv");
  const auto n = static_cast<int64_t>(c.block_out_channels.size());
  const int64_t lpb = c.layers_per_block;
  for (int64_t i = 0; i < n; ++i) {
    const std::string ld = cat({"encoder.down.", num(i)});
    const std::string dd = cat({"encoder.down_blocks.", num(i)});
    for (int64_t j = 0; j < lpb; ++j)
      m.add(cat({ld, ".block.", num(j)}), cat({dd, ".resnets.", num(j)}), LeafKind::vae_resnet);
    if (i + 1 < n) m.add(ld + ".downsample", dd + ".downsamplers.0");
    // The decoder's up.N counts from the lowest resolution upward; diffusers' up_blocks from the
    // first block the latents enter.
    const std::string lu = cat({"decoder.up.", num(n - 1 - i)});
    const std::string du = cat({"decoder.up_blocks.", num(i)});
    for (int64_t j = 0; j <= lpb; ++j)
      m.add(cat({lu, ".block.", num(j)}), cat({du, ".resnets.", num(j)}), LeafKind::vae_resnet);
    if (i + 1 < n) m.add(lu + ".upsample", du + ".upsamplers.0");
  }
  return m;
}

namespace {

bool starts_with(std::string_view s, std::string_view p) {
  return s.substr(0, p.size()) == p;
}

// VAE attention q/k/v/proj_out are 1x1 convs in LDM ([C, C, 1, 1], or [C, C, 1] in some
// exports) and Linear in diffusers.
bool is_vae_attention_matrix(std::string_view diffusers_name, LeafKind leaf) {
  if (leaf != LeafKind::vae_attention) return false;
  for (const char* w : {".to_q.weight", ".to_k.weight", ".to_v.weight", ".to_out.0.weight"}) {
    const std::string_view s = w;
    if (diffusers_name.size() >= s.size() &&
        diffusers_name.substr(diffusers_name.size() - s.size()) == s)
      return true;
  }
  return false;
}

std::shared_ptr<RemappedTensorSource> remap_with(std::shared_ptr<const TensorSource> ckpt,
                                                 const KeyMap& map, const std::string& prefix,
                                                 const std::string& what) {
  auto out = std::make_shared<RemappedTensorSource>(
      ckpt, ckpt->path() + " (" + what + ": '" + prefix + "*' in the original LDM layout)");
  for (const TensorInfo& i : ckpt->tensors()) {
    if (!starts_with(i.name, prefix)) continue;
    const std::string_view rest = std::string_view(i.name).substr(prefix.size());
    LeafKind leaf = LeafKind::plain;
    const auto name = map.to_diffusers(rest, &leaf);
    Remap r;
    r.base_name = i.name;
    if (!name) {
      // Unknown to the map: listed under its own name so that the loader reports it unused.
      out->add_entry(std::string(rest), std::move(r));
      continue;
    }
    if (is_vae_attention_matrix(*name, leaf) && (i.shape.size() == 3 || i.shape.size() == 4)) {
      r.op = Remap::Op::reshape;
      r.shape = {i.shape[0], i.shape[1]};
    }
    out->add_entry(*name, std::move(r));
  }
  return out;
}

}  // namespace
}  // namespace loaders

using loaders::Remap;
using loaders::RemappedTensorSource;

std::shared_ptr<TensorSource> ldm_unet_source(std::shared_ptr<const TensorSource> checkpoint,
                                              const UNet2DConditionConfig& config,
                                              const std::string& prefix) {
  return loaders::remap_with(std::move(checkpoint), loaders::unet_key_map(config), prefix, "unet");
}

std::shared_ptr<TensorSource> ldm_vae_source(std::shared_ptr<const TensorSource> checkpoint,
                                             const AutoencoderKLConfig& config,
                                             const std::string& prefix) {
  return loaders::remap_with(std::move(checkpoint), loaders::vae_key_map(config), prefix, "vae");
}

std::shared_ptr<TensorSource> ldm_clip_source(std::shared_ptr<const TensorSource> checkpoint,
                                              const std::string& prefix) {
  auto out = std::make_shared<RemappedTensorSource>(
      checkpoint,
      checkpoint->path() + " (text_encoder: '" + prefix + "*' in the original LDM layout)");
  for (const TensorInfo& i : checkpoint->tensors()) {
    if (!loaders::starts_with(i.name, prefix)) continue;
    std::string rest = i.name.substr(prefix.size());
    // transformers < 4.x saved CLIPTextModel without the text_model. level.
    if (!loaders::starts_with(rest, "text_model.") &&
        !loaders::starts_with(rest, "text_projection"))
      rest = "text_model." + rest;
    Remap r;
    r.base_name = i.name;
    out->add_entry(rest, std::move(r));
  }
  return out;
}

std::shared_ptr<TensorSource> open_clip_source(std::shared_ptr<const TensorSource> checkpoint,
                                               const CLIPTextConfig& config,
                                               const std::string& prefix) {
  auto out = std::make_shared<RemappedTensorSource>(
      checkpoint,
      checkpoint->path() + " (text_encoder: OpenCLIP '" + prefix + "*' in the original layout)");
  // (OpenCLIP, transformers) names inside a resblock (textenc_transformer_conversion_lst).
  static const std::array<std::pair<std::string_view, std::string_view>, 5> block = {{
      {"ln_1.", "layer_norm1."},
      {"ln_2.", "layer_norm2."},
      {"mlp.c_fc.", "mlp.fc1."},
      {"mlp.c_proj.", "mlp.fc2."},
      {"attn.out_proj.", "self_attn.out_proj."},
  }};
  // diffusers drops the last resblock and the projection of SD 2.x files only
  // (SD_2_TEXT_ENCODER_KEYS_TO_IGNORE); SDXL's bigG uses every layer.
  const bool sd2 = prefix == "cond_stage_model.model.";
  for (const TensorInfo& i : checkpoint->tensors()) {
    if (!loaders::starts_with(i.name, prefix)) continue;
    const std::string rest = i.name.substr(prefix.size());
    Remap r;
    r.base_name = i.name;
    if (rest == "token_embedding.weight") {
      out->add_entry("text_model.embeddings.token_embedding.weight", std::move(r));
    } else if (rest == "positional_embedding") {
      out->add_entry("text_model.embeddings.position_embedding.weight", std::move(r));
    } else if (rest == "ln_final.weight" || rest == "ln_final.bias") {
      out->add_entry("text_model.final_layer_norm." + rest.substr(9), std::move(r));
    } else if (rest == "text_projection") {
      // OpenCLIP multiplies x @ text_projection ([hidden, proj]); a Linear weight is [proj,
      // hidden].
      if (!config.with_projection && sd2) continue;
      if (!config.with_projection) {
        // Listed under its own name: a CLIPTextModel config for a file with a projection is
        // reported (unused tensor) rather than silently losing text_embeds.
        out->add_entry(rest, std::move(r));
        continue;
      }
      r.op = Remap::Op::transpose;
      out->add_entry("text_projection.weight", std::move(r));
    } else if (loaders::starts_with(rest, "transformer.resblocks.")) {
      const std::string tail = rest.substr(22);  // "<n>.<module>..."
      const auto dot = tail.find('.');
      if (dot == std::string::npos) {
        out->add_entry(rest, std::move(r));
        continue;
      }
      int64_t layer = -1;
      try {
        layer = std::stoll(tail.substr(0, dot));
      } catch (const std::exception&) {
        layer = -1;
      }
      // SD 2.x conditions on the penultimate layer: the last resblock is never used.
      if (sd2 && layer >= config.num_hidden_layers) continue;
      const std::string layer_prefix = "text_model.encoder.layers." + tail.substr(0, dot) + ".";
      const std::string module = tail.substr(dot + 1);
      if (module == "attn.in_proj_weight" || module == "attn.in_proj_bias") {
        const TensorInfo& b = checkpoint->info(i.name);
        DIFFUSE_CHECK(!b.shape.empty() && b.shape[0] % 3 == 0, checkpoint->path(), ": '", i.name,
                      "' has shape ", shape_str(b.shape),
                      "; expected 3 * hidden_size rows (fused q, k, v)");
        const int64_t d = b.shape[0] / 3;
        const char* qkv[] = {"q_proj", "k_proj", "v_proj"};
        const std::string suffix = module == "attn.in_proj_weight" ? ".weight" : ".bias";
        for (int64_t k = 0; k < 3; ++k) {
          Remap part = r;
          part.op = Remap::Op::narrow0;
          part.start = k * d;
          part.length = d;
          out->add_entry(layer_prefix + "self_attn." + qkv[k] + suffix, std::move(part));
        }
        continue;
      }
      bool mapped = false;
      for (const auto& [o, t] : block) {
        if (loaders::starts_with(module, o)) {
          out->add_entry(layer_prefix + std::string(t) + module.substr(o.size()), r);
          mapped = true;
          break;
        }
      }
      if (!mapped) out->add_entry(rest, std::move(r));
    } else if (rest == "logit_scale" || loaders::starts_with(rest, "visual.")) {
      continue;  // CLIP's contrastive temperature and image tower: not part of a text encoder
    } else {
      out->add_entry(rest, std::move(r));
    }
  }
  return out;
}

// --- detection ------------------------------------------------------------------------------

std::string_view single_file_model_type_name(SingleFileModelType t) {
  switch (t) {
    case SingleFileModelType::v1:
      return "v1";
    case SingleFileModelType::v2:
      return "v2";
    case SingleFileModelType::inpainting:
      return "inpainting";
    case SingleFileModelType::inpainting_v2:
      return "inpainting_v2";
    case SingleFileModelType::xl_base:
      return "xl_base";
    case SingleFileModelType::xl_refiner:
      return "xl_refiner";
    case SingleFileModelType::xl_inpaint:
      return "xl_inpaint";
  }
  return "unknown";
}

std::string_view single_file_model_type_description(SingleFileModelType t) {
  switch (t) {
    case SingleFileModelType::v1:
      return "Stable Diffusion 1.x";
    case SingleFileModelType::v2:
      return "Stable Diffusion 2.x";
    case SingleFileModelType::inpainting:
      return "Stable Diffusion 1.x inpainting";
    case SingleFileModelType::inpainting_v2:
      return "Stable Diffusion 2.x inpainting";
    case SingleFileModelType::xl_base:
      return "SDXL base";
    case SingleFileModelType::xl_refiner:
      return "SDXL refiner";
    case SingleFileModelType::xl_inpaint:
      return "SDXL inpainting";
  }
  return "unknown";
}

bool is_sdxl(SingleFileModelType t) {
  return t == SingleFileModelType::xl_base || t == SingleFileModelType::xl_refiner ||
         t == SingleFileModelType::xl_inpaint;
}

SingleFileModelType infer_single_file_model_type(const TensorSource& ckpt) {
  // CHECKPOINT_KEY_NAMES of diffusers' single_file_utils.py.
  static constexpr std::string_view kConvIn = "model.diffusion_model.input_blocks.0.0.weight";
  static constexpr std::string_view kV2 =
      "model.diffusion_model.input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight";
  static constexpr std::string_view kXlBase =
      "conditioner.embedders.1.model.transformer.resblocks.9.mlp.c_proj.bias";
  static constexpr std::string_view kXlRefiner =
      "conditioner.embedders.0.model.transformer.resblocks.9.mlp.c_proj.bias";
  const TensorInfo* conv_in = ckpt.find(kConvIn);
  DIFFUSE_CHECK(conv_in != nullptr, ckpt.path(),
                ": not an original Stable Diffusion checkpoint: it has no '", kConvIn,
                "' (expected the LDM layout with model.diffusion_model.*, first_stage_model.*, "
                "cond_stage_model.* keys; a diffusers folder loads with from_pretrained)");
  const TensorInfo* v2 = ckpt.find(kV2);
  const bool is_v2 = v2 != nullptr && !v2->shape.empty() && v2->shape.back() == 1024;
  const bool xl_base = ckpt.contains(kXlBase);
  if (conv_in->shape.size() == 4 && conv_in->shape[1] == 9) {
    if (is_v2) return SingleFileModelType::inpainting_v2;
    if (xl_base) return SingleFileModelType::xl_inpaint;
    return SingleFileModelType::inpainting;
  }
  if (is_v2) return SingleFileModelType::v2;
  if (xl_base) return SingleFileModelType::xl_base;
  if (ckpt.contains(kXlRefiner)) return SingleFileModelType::xl_refiner;
  return SingleFileModelType::v1;
}

// --- inspection -----------------------------------------------------------------------------

std::optional<SingleFileSummary> summarize_single_file(const TensorSource& ckpt) {
  if (!ckpt.contains("model.diffusion_model.input_blocks.0.0.weight")) return std::nullopt;
  SingleFileSummary s;
  s.type = infer_single_file_model_type(ckpt);
  s.prediction_type = infer_prediction_type(s.type, ckpt);
  // (component, key prefix) in pipeline order; the SD 1.x / 2.x text encoder is counted whole
  // (transformer.* or model.*), and the refiner's bigG is text_encoder_2 as SDXL pipelines name
  // it.
  std::vector<std::pair<std::string, std::string>> groups = {{"unet", "model.diffusion_model."},
                                                             {"vae", "first_stage_model."}};
  if (!is_sdxl(s.type)) {
    groups.emplace_back("text_encoder", "cond_stage_model.");
  } else if (s.type == SingleFileModelType::xl_refiner) {
    groups.emplace_back("text_encoder_2", "conditioner.embedders.0.");
  } else {
    groups.emplace_back("text_encoder", "conditioner.embedders.0.");
    groups.emplace_back("text_encoder_2", "conditioner.embedders.1.");
  }
  std::vector<SingleFileComponentSummary> parts(groups.size() + 1);
  for (std::size_t g = 0; g < groups.size(); ++g) {
    parts[g].component = groups[g].first;
    parts[g].prefix = groups[g].second;
  }
  parts.back().component = "other";
  for (const TensorInfo& i : ckpt.tensors()) {
    std::size_t g = 0;
    while (g < groups.size() && !loaders::starts_with(i.name, groups[g].second)) ++g;
    SingleFileComponentSummary& p = parts[g];
    int64_t n = 1;
    for (const int64_t d : i.shape) n *= d;
    ++p.tensors;
    p.parameters += n;
    p.bytes += i.stored_bytes;
    p.parameters_per_type[i.stored_type] += n;
  }
  for (auto& p : parts)
    if (p.tensors > 0) s.components.push_back(std::move(p));
  return s;
}

}  // namespace diffuse
