// diffusers models/unets/unet_2d_condition.py (+ the blocks of unet_2d_blocks.py it uses).
#include "diffuse/models/unet_2d_condition.h"

#include <algorithm>

#include "diffuse/formats/tensor_source.h"
#include "src/nn/embeddings.h"
#include "src/nn/resnet.h"
#include "src/nn/transformer_2d.h"

namespace diffuse {

// --- Config ------------------------------------------------------------------------------------

UNet2DConditionConfig UNet2DConditionConfig::from_json(const nlohmann::json& json) {
  UNet2DConditionConfig c;
  ConfigReader r(json, "UNet2DConditionModel");
  r.get("sample_size", c.sample_size);
  r.get("in_channels", c.in_channels);
  r.get("out_channels", c.out_channels);
  r.get("center_input_sample", c.center_input_sample);
  r.get("flip_sin_to_cos", c.flip_sin_to_cos);
  r.get("freq_shift", c.freq_shift);
  r.get("down_block_types", c.down_block_types);
  if (r.has("mid_block_type")) r.get("mid_block_type", c.mid_block_type);
  if (json.contains("mid_block_type") && json["mid_block_type"].is_null()) c.mid_block_type.reset();
  r.get("up_block_types", c.up_block_types);
  r.get("only_cross_attention", c.only_cross_attention);
  r.get("block_out_channels", c.block_out_channels);
  r.get("layers_per_block", c.layers_per_block);
  r.get("downsample_padding", c.downsample_padding);
  r.get("mid_block_scale_factor", c.mid_block_scale_factor);
  r.get("dropout", c.dropout);
  r.get("act_fn", c.act_fn);
  r.get("norm_num_groups", c.norm_num_groups);
  r.get("norm_eps", c.norm_eps);
  r.get("cross_attention_dim", c.cross_attention_dim);
  r.get("transformer_layers_per_block", c.transformer_layers_per_block);
  r.get("reverse_transformer_layers_per_block", c.reverse_transformer_layers_per_block);
  if (json.contains("reverse_transformer_layers_per_block") &&
      json["reverse_transformer_layers_per_block"].is_null())
    c.reverse_transformer_layers_per_block = nullptr;
  r.get("encoder_hid_dim", c.encoder_hid_dim);
  r.get("encoder_hid_dim_type", c.encoder_hid_dim_type);
  r.get("attention_head_dim", c.attention_head_dim);
  r.get("num_attention_heads", c.num_attention_heads);
  r.get("dual_cross_attention", c.dual_cross_attention);
  r.get("use_linear_projection", c.use_linear_projection);
  r.get("class_embed_type", c.class_embed_type);
  r.get("addition_embed_type", c.addition_embed_type);
  r.get("addition_time_embed_dim", c.addition_time_embed_dim);
  r.get("num_class_embeds", c.num_class_embeds);
  r.get("upcast_attention", c.upcast_attention);
  r.get("resnet_time_scale_shift", c.resnet_time_scale_shift);
  r.get("resnet_skip_time_act", c.resnet_skip_time_act);
  r.get("resnet_out_scale_factor", c.resnet_out_scale_factor);
  r.get("time_embedding_type", c.time_embedding_type);
  r.get("time_embedding_dim", c.time_embedding_dim);
  r.get("time_embedding_act_fn", c.time_embedding_act_fn);
  r.get("timestep_post_act", c.timestep_post_act);
  r.get("time_cond_proj_dim", c.time_cond_proj_dim);
  r.get("conv_in_kernel", c.conv_in_kernel);
  r.get("conv_out_kernel", c.conv_out_kernel);
  r.get("projection_class_embeddings_input_dim", c.projection_class_embeddings_input_dim);
  r.get("attention_type", c.attention_type);
  r.get("class_embeddings_concat", c.class_embeddings_concat);
  r.get("mid_block_only_cross_attention", c.mid_block_only_cross_attention);
  r.get("cross_attention_norm", c.cross_attention_norm);
  r.get("addition_embed_type_num_heads", c.addition_embed_type_num_heads);
  r.finish();
  c.validate();
  return c;
}

namespace {

constexpr const char* kOwner = "UNet2DConditionModel";

// A per-block list from an int-or-list config value.
std::vector<int64_t> per_block(const IntOrList& v, std::size_t n, const char* key) {
  std::vector<int64_t> out(n);
  for (std::size_t i = 0; i < n; ++i) out[i] = v.at(i, n, key);
  return out;
}

std::vector<bool> per_block_bool(const nlohmann::json& v, std::size_t n, const char* key) {
  if (v.is_boolean()) return std::vector<bool>(n, v.get<bool>());
  DIFFUSE_CHECK(v.is_array() && v.size() == n, kOwner, ": config '", key,
                "' must be a boolean or a list of ", n, " booleans, got ", v.dump());
  std::vector<bool> out;
  for (const auto& e : v) {
    DIFFUSE_CHECK(e.is_boolean(), kOwner, ": config '", key, "' holds a non-boolean: ", v.dump());
    out.push_back(e.get<bool>());
  }
  return out;
}

// transformer_layers_per_block: int, list of ints (one per block) or list of lists (one per
// layer of each block). Returns per block, per layer.
std::vector<std::vector<int64_t>> transformer_layers(const nlohmann::json& v,
                                                     const std::vector<int64_t>& layers,
                                                     const char* key) {
  const std::size_t n = layers.size();
  std::vector<std::vector<int64_t>> out(n);
  const auto layer_list = [&](const nlohmann::json& e, std::size_t block) {
    if (e.is_number_integer()) return std::vector<int64_t>(layers[block], e.get<int64_t>());
    DIFFUSE_CHECK(e.is_array(), kOwner, ": config '", key, "' is malformed: ", v.dump());
    std::vector<int64_t> l;
    for (const auto& x : e) {
      DIFFUSE_CHECK(x.is_number_integer(), kOwner, ": config '", key, "' is malformed: ", v.dump());
      l.push_back(x.get<int64_t>());
    }
    return l;
  };
  if (v.is_number_integer()) {
    for (std::size_t i = 0; i < n; ++i) out[i] = layer_list(v, i);
    return out;
  }
  DIFFUSE_CHECK(v.is_array() && v.size() == n, kOwner, ": config '", key,
                "' must be an int or a list of ", n, " entries, got ", v.dump());
  for (std::size_t i = 0; i < n; ++i) out[i] = layer_list(v[i], i);
  return out;
}

}  // namespace

void UNet2DConditionConfig::validate() const {
  const std::size_t n = down_block_types.size();
  DIFFUSE_CHECK(n > 0, kOwner, ": down_block_types is empty");
  DIFFUSE_CHECK(up_block_types.size() == n, kOwner,
                ": must provide the same number of down_block_types and up_block_types (", n,
                " vs ", up_block_types.size(), ")");
  DIFFUSE_CHECK(block_out_channels.size() == n, kOwner,
                ": must provide the same number of block_out_channels and down_block_types (",
                block_out_channels.size(), " vs ", n, ")");
  DIFFUSE_CHECK(!num_attention_heads.has_value(), kOwner,
                ": num_attention_heads cannot be set because of a naming issue in diffusers "
                "(https://github.com/huggingface/diffusers/issues/2011); use attention_head_dim");
  (void)per_block(layers_per_block, n, "layers_per_block");
  (void)per_block(attention_head_dim, n, "attention_head_dim");
  (void)per_block(cross_attention_dim, n, "cross_attention_dim");
  (void)per_block_bool(only_cross_attention, n, "only_cross_attention");
  for (const auto& t : down_block_types)
    DIFFUSE_CHECK(t == "DownBlock2D" || t == "CrossAttnDownBlock2D", kOwner,
                  ": unsupported down block type '", t,
                  "' (supported: DownBlock2D, CrossAttnDownBlock2D)");
  for (const auto& t : up_block_types)
    DIFFUSE_CHECK(t == "UpBlock2D" || t == "CrossAttnUpBlock2D", kOwner,
                  ": unsupported up block type '", t,
                  "' (supported: UpBlock2D, CrossAttnUpBlock2D)");
  DIFFUSE_CHECK(!mid_block_type || *mid_block_type == "UNetMidBlock2DCrossAttn" ||
                    *mid_block_type == "UNetMidBlock2D",
                kOwner, ": unsupported mid_block_type '", mid_block_type.value_or(""),
                "' (supported: UNetMidBlock2DCrossAttn, UNetMidBlock2D, null)");
  DIFFUSE_CHECK(time_embedding_type == "positional", kOwner, ": unsupported time_embedding_type '",
                time_embedding_type, "' (supported: positional)");
  DIFFUSE_CHECK(!dual_cross_attention, kOwner, ": dual_cross_attention is not supported");
  DIFFUSE_CHECK(attention_type == "default", kOwner, ": unsupported attention_type '",
                attention_type, "'");
  DIFFUSE_CHECK(!cross_attention_norm, kOwner, ": cross_attention_norm is not supported");
  DIFFUSE_CHECK(!class_embed_type || *class_embed_type == "timestep" ||
                    *class_embed_type == "identity" || *class_embed_type == "projection" ||
                    *class_embed_type == "simple_projection",
                kOwner, ": unsupported class_embed_type '", class_embed_type.value_or(""), "'");
  DIFFUSE_CHECK(!addition_embed_type || *addition_embed_type == "text_time", kOwner,
                ": unsupported addition_embed_type '", addition_embed_type.value_or(""),
                "' (supported: text_time)");
  if (addition_embed_type)
    DIFFUSE_CHECK(addition_time_embed_dim && projection_class_embeddings_input_dim, kOwner,
                  ": addition_embed_type text_time needs addition_time_embed_dim and "
                  "projection_class_embeddings_input_dim");
  DIFFUSE_CHECK(!encoder_hid_dim_type || *encoder_hid_dim_type == "text_proj", kOwner,
                ": unsupported encoder_hid_dim_type '", encoder_hid_dim_type.value_or(""),
                "' (supported: text_proj)");
  DIFFUSE_CHECK(conv_in_kernel % 2 == 1 && conv_out_kernel % 2 == 1, kOwner,
                ": conv_in_kernel and conv_out_kernel must be odd");
  DIFFUSE_CHECK(norm_num_groups.has_value(), kOwner,
                ": norm_num_groups = null (no output norm) is not supported");
}

// --- Blocks (unet_2d_blocks.py) -----------------------------------------------------------------

namespace {

struct BlockSettings {
  int64_t temb_channels = 0;
  int64_t groups = 32;
  double eps = 1e-5;
  ops::Activation act = ops::Activation::silu;
  std::string time_scale_shift = "default";
  bool skip_time_act = false;
  double output_scale_factor = 1.0;
  bool use_linear_projection = false;
  DType compute = DType::f32;
};

nn::ResnetBlock2D make_resnet(const WeightLoader& w, const BlockSettings& s, int64_t in,
                              int64_t out, double output_scale_factor) {
  nn::ResnetBlock2DConfig rc;
  rc.in_channels = in;
  rc.out_channels = out;
  rc.temb_channels = s.temb_channels;
  rc.groups = s.groups;
  rc.eps = s.eps;
  rc.time_embedding_norm = s.time_scale_shift;
  rc.non_linearity = s.act;
  rc.output_scale_factor = output_scale_factor;
  rc.skip_time_act = s.skip_time_act;
  return nn::ResnetBlock2D(w, rc, s.compute);
}

nn::Transformer2DModel make_transformer(const WeightLoader& w, const BlockSettings& s,
                                        int64_t channels, int64_t heads, int64_t layers,
                                        int64_t cross_dim, bool only_cross) {
  DIFFUSE_CHECK(channels % heads == 0, kOwner, ": ", channels, " channels are not divisible by ",
                heads, " attention heads at '", w.prefix(), "'");
  nn::Transformer2DConfig tc;
  tc.num_attention_heads = heads;
  tc.attention_head_dim = channels / heads;
  tc.in_channels = channels;
  tc.num_layers = layers;
  tc.cross_attention_dim = cross_dim;
  tc.norm_num_groups = s.groups;
  tc.use_linear_projection = s.use_linear_projection;
  tc.only_cross_attention = only_cross;
  return nn::Transformer2DModel(w, tc, s.compute);
}

// DownBlock2D / CrossAttnDownBlock2D.
struct DownBlock {
  std::vector<nn::ResnetBlock2D> resnets;
  std::vector<nn::Transformer2DModel> attentions;  // empty for DownBlock2D
  std::optional<nn::Downsample2D> downsampler;

  Tensor forward(Tensor h, const Tensor& temb, const Tensor& context, const Tensor& context_mask,
                 std::vector<Tensor>& outputs) const {
    for (std::size_t i = 0; i < resnets.size(); ++i) {
      h = resnets[i](h, temb);
      if (!attentions.empty()) h = attentions[i](h, context, context_mask);
      outputs.push_back(h);
    }
    if (downsampler) {
      h = (*downsampler)(h);
      outputs.push_back(h);
    }
    return h;
  }
};

// UpBlock2D / CrossAttnUpBlock2D.
struct UpBlock {
  std::vector<nn::ResnetBlock2D> resnets;
  std::vector<nn::Transformer2DModel> attentions;
  std::optional<nn::Upsample2D> upsampler;

  Tensor forward(Tensor h, const Tensor& temb, const Tensor& context, const Tensor& context_mask,
                 std::vector<Tensor>& skips, const Shape& upsample_size) const {
    for (std::size_t i = 0; i < resnets.size(); ++i) {
      h = ops::concat({h, skips.back()}, 1);
      skips.pop_back();
      h = resnets[i](h, temb);
      if (!attentions.empty()) h = attentions[i](h, context, context_mask);
    }
    if (upsampler) h = (*upsampler)(h, upsample_size);
    return h;
  }
};

// UNetMidBlock2DCrossAttn (one transformer) or UNetMidBlock2D (attention-free form used by
// UNets that set mid_block_type = "UNetMidBlock2D" with add_attention false is not handled).
struct MidBlock {
  std::vector<nn::ResnetBlock2D> resnets;
  std::vector<nn::Transformer2DModel> attentions;

  Tensor forward(Tensor h, const Tensor& temb, const Tensor& context,
                 const Tensor& context_mask) const {
    h = resnets[0](h, temb);
    for (std::size_t i = 0; i < attentions.size(); ++i) {
      h = attentions[i](h, context, context_mask);
      h = resnets[i + 1](h, temb);
    }
    return h;
  }
};

}  // namespace

// --- The model ----------------------------------------------------------------------------------

struct UNet2DConditionModel::Impl {
  UNet2DConditionConfig config;
  DType compute = DType::f32;
  ops::Activation act = ops::Activation::silu;
  nn::Timesteps time_proj;
  nn::TimestepEmbedding time_embedding;
  std::optional<nn::TimestepEmbedding> class_embedding;
  Tensor class_embedding_table;  // num_class_embeds
  std::optional<nn::Timesteps> add_time_proj;
  std::optional<nn::TimestepEmbedding> add_embedding;
  std::optional<ops::Activation> time_embed_act;
  std::optional<nn::Linear> encoder_hid_proj;
  nn::Conv2d conv_in;
  std::vector<DownBlock> down_blocks;
  std::optional<MidBlock> mid_block;
  std::vector<UpBlock> up_blocks;
  nn::GroupNorm conv_norm_out;
  nn::Conv2d conv_out;
  int64_t num_upsamplers = 0;
};

UNet2DConditionModel::UNet2DConditionModel(const UNet2DConditionConfig& config,
                                           const WeightLoader& weights, DType compute_dtype)
    : impl_(std::make_unique<Impl>()) {
  config.validate();
  Impl& m = *impl_;
  m.config = config;
  m.compute = compute_dtype;
  const auto& c = config;
  const std::size_t n = c.down_block_types.size();
  m.act = nn::parse_activation(c.act_fn, "UNet2DConditionModel act_fn");

  const auto layers = per_block(c.layers_per_block, n, "layers_per_block");
  // diffusers' historical quirk: attention_head_dim is really the number of heads.
  const auto heads = per_block(c.attention_head_dim, n, "attention_head_dim");
  const auto cross_dims = per_block(c.cross_attention_dim, n, "cross_attention_dim");
  const auto only_cross = per_block_bool(c.only_cross_attention, n, "only_cross_attention");
  const auto tlayers =
      transformer_layers(c.transformer_layers_per_block, layers, "transformer_layers_per_block");

  // 1. Time embedding.
  const int64_t c0 = c.block_out_channels[0];
  const int64_t time_embed_dim = c.time_embedding_dim.value_or(c0 * 4);
  m.time_proj = nn::Timesteps{c0, c.flip_sin_to_cos, c.freq_shift, 1.0};
  std::optional<ops::Activation> post_act;
  if (c.timestep_post_act)
    post_act = nn::parse_activation(*c.timestep_post_act, "UNet2DConditionModel timestep_post_act");
  m.time_embedding =
      nn::TimestepEmbedding(weights.scope("time_embedding"), c0, time_embed_dim, m.act,
                            std::nullopt, post_act, c.time_cond_proj_dim, compute_dtype);
  if (c.encoder_hid_dim_type) {
    DIFFUSE_CHECK(c.encoder_hid_dim.has_value(), kOwner,
                  ": encoder_hid_dim_type is set but encoder_hid_dim is not");
    m.encoder_hid_proj.emplace(weights.scope("encoder_hid_proj"), *c.encoder_hid_dim, cross_dims[0],
                               true, compute_dtype);
  }
  if (c.class_embed_type) {
    const std::string& t = *c.class_embed_type;
    if (t == "timestep") {
      m.class_embedding.emplace(weights.scope("class_embedding"), c0, time_embed_dim, m.act,
                                std::nullopt, std::nullopt, std::nullopt, compute_dtype);
    } else if (t == "projection" || t == "simple_projection") {
      DIFFUSE_CHECK(c.projection_class_embeddings_input_dim.has_value(), kOwner,
                    ": class_embed_type '", t, "' needs projection_class_embeddings_input_dim");
      if (t == "projection") {
        m.class_embedding.emplace(weights.scope("class_embedding"),
                                  *c.projection_class_embeddings_input_dim, time_embed_dim, m.act,
                                  std::nullopt, std::nullopt, std::nullopt, compute_dtype);
      } else {
        DIFFUSE_FAIL(kOwner, ": class_embed_type simple_projection is not supported");
      }
    }
  } else if (c.num_class_embeds) {
    m.class_embedding_table = weights.scope("class_embedding")
                                  .get("weight", {*c.num_class_embeds, time_embed_dim}, DType::f32);
  }
  if (c.addition_embed_type) {
    m.add_time_proj =
        nn::Timesteps{*c.addition_time_embed_dim, c.flip_sin_to_cos, c.freq_shift, 1.0};
    m.add_embedding.emplace(weights.scope("add_embedding"),
                            *c.projection_class_embeddings_input_dim, time_embed_dim, m.act,
                            std::nullopt, std::nullopt, std::nullopt, compute_dtype);
  }
  if (c.time_embedding_act_fn)
    m.time_embed_act = nn::parse_activation(*c.time_embedding_act_fn,
                                            "UNet2DConditionModel time_embedding_act_fn");
  const int64_t blocks_time_embed_dim =
      c.class_embeddings_concat ? time_embed_dim * 2 : time_embed_dim;

  BlockSettings s;
  s.temb_channels = blocks_time_embed_dim;
  s.groups = *c.norm_num_groups;
  s.eps = c.norm_eps;
  s.act = m.act;
  s.time_scale_shift = c.resnet_time_scale_shift;
  s.skip_time_act = c.resnet_skip_time_act;
  s.use_linear_projection = c.use_linear_projection;
  s.compute = compute_dtype;

  // 2. conv_in.
  m.conv_in = nn::Conv2d(weights.scope("conv_in"), c.in_channels, c0, c.conv_in_kernel, 1,
                         (c.conv_in_kernel - 1) / 2, true, compute_dtype);

  // 3. Down blocks.
  int64_t output_channel = c0;
  for (std::size_t i = 0; i < n; ++i) {
    const WeightLoader w = weights.scope("down_blocks").scope(static_cast<int64_t>(i));
    const int64_t input_channel = output_channel;
    output_channel = c.block_out_channels[i];
    const bool cross = c.down_block_types[i] == "CrossAttnDownBlock2D";
    DownBlock b;
    for (int64_t j = 0; j < layers[i]; ++j) {
      b.resnets.push_back(make_resnet(w.scope("resnets").scope(j), s,
                                      j == 0 ? input_channel : output_channel, output_channel,
                                      c.resnet_out_scale_factor));
      if (cross)
        b.attentions.push_back(make_transformer(w.scope("attentions").scope(j), s, output_channel,
                                                heads[i], tlayers[i].at(j), cross_dims[i],
                                                only_cross[i]));
    }
    if (i + 1 < n)
      b.downsampler.emplace(w.scope("downsamplers").scope(0), output_channel, output_channel,
                            c.downsample_padding, compute_dtype);
    m.down_blocks.push_back(std::move(b));
  }

  // 4. Mid block.
  if (c.mid_block_type) {
    const WeightLoader w = weights.scope("mid_block");
    const int64_t ch = c.block_out_channels.back();
    MidBlock b;
    b.resnets.push_back(
        make_resnet(w.scope("resnets").scope(0), s, ch, ch, c.mid_block_scale_factor));
    if (*c.mid_block_type == "UNetMidBlock2DCrossAttn") {
      const bool mid_only_cross = c.mid_block_only_cross_attention.value_or(only_cross.back());
      b.attentions.push_back(make_transformer(w.scope("attentions").scope(0), s, ch, heads.back(),
                                              tlayers.back().at(0), cross_dims.back(),
                                              mid_only_cross));
      b.resnets.push_back(
          make_resnet(w.scope("resnets").scope(1), s, ch, ch, c.mid_block_scale_factor));
    } else {
      DIFFUSE_FAIL(kOwner,
                   ": mid_block_type UNetMidBlock2D is not supported in a conditional UNet");
    }
    m.mid_block = std::move(b);
  }

  // 5. Up blocks (channels, heads, layers reversed).
  std::vector<int64_t> rev_channels(c.block_out_channels.rbegin(), c.block_out_channels.rend());
  std::vector<int64_t> rev_heads(heads.rbegin(), heads.rend());
  std::vector<int64_t> rev_layers(layers.rbegin(), layers.rend());
  std::vector<int64_t> rev_cross(cross_dims.rbegin(), cross_dims.rend());
  std::vector<bool> rev_only_cross(only_cross.rbegin(), only_cross.rend());
  std::vector<std::vector<int64_t>> rev_tlayers;
  if (!c.reverse_transformer_layers_per_block.is_null()) {
    std::vector<int64_t> up_layers(n);
    for (std::size_t i = 0; i < n; ++i) up_layers[i] = rev_layers[i] + 1;
    rev_tlayers = transformer_layers(c.reverse_transformer_layers_per_block, up_layers,
                                     "reverse_transformer_layers_per_block");
  } else {
    rev_tlayers.assign(tlayers.rbegin(), tlayers.rend());
  }
  output_channel = rev_channels[0];
  for (std::size_t i = 0; i < n; ++i) {
    const WeightLoader w = weights.scope("up_blocks").scope(static_cast<int64_t>(i));
    const bool is_final = i + 1 == n;
    const int64_t prev_output_channel = output_channel;
    output_channel = rev_channels[i];
    const int64_t input_channel = rev_channels[std::min(i + 1, n - 1)];
    const bool cross = c.up_block_types[i] == "CrossAttnUpBlock2D";
    const int64_t num_layers = rev_layers[i] + 1;
    UpBlock b;
    for (int64_t j = 0; j < num_layers; ++j) {
      const int64_t skip_channels = j == num_layers - 1 ? input_channel : output_channel;
      const int64_t resnet_in = j == 0 ? prev_output_channel : output_channel;
      b.resnets.push_back(make_resnet(w.scope("resnets").scope(j), s, resnet_in + skip_channels,
                                      output_channel, c.resnet_out_scale_factor));
      if (cross) {
        // Per-layer transformer depth of an up block: its list, or its int repeated.
        const auto& tl = rev_tlayers[i];
        const int64_t depth = static_cast<std::size_t>(j) < tl.size() ? tl[j] : tl.front();
        b.attentions.push_back(make_transformer(w.scope("attentions").scope(j), s, output_channel,
                                                rev_heads[i], depth, rev_cross[i],
                                                rev_only_cross[i]));
      }
    }
    if (!is_final) {
      b.upsampler.emplace(w.scope("upsamplers").scope(0), output_channel, output_channel,
                          compute_dtype);
      ++m.num_upsamplers;
    }
    m.up_blocks.push_back(std::move(b));
  }

  // 6. Output.
  m.conv_norm_out =
      nn::GroupNorm(weights.scope("conv_norm_out"), *c.norm_num_groups, c0, c.norm_eps);
  m.conv_out = nn::Conv2d(weights.scope("conv_out"), c0, c.out_channels, c.conv_out_kernel, 1,
                          (c.conv_out_kernel - 1) / 2, true, compute_dtype);
}

UNet2DConditionModel UNet2DConditionModel::from_pretrained(const std::filesystem::path& folder,
                                                           const ModelOptions& options) {
  const auto config = UNet2DConditionConfig::from_json(read_json_file(folder / "config.json"));
  WeightLoader w(open_tensor_source(folder, options.variant), options.weight_dtype);
  UNet2DConditionModel model(config, w, options.compute_dtype);
  w.finish();
  return model;
}

UNet2DConditionModel::~UNet2DConditionModel() = default;
UNet2DConditionModel::UNet2DConditionModel(UNet2DConditionModel&&) noexcept = default;
UNet2DConditionModel& UNet2DConditionModel::operator=(UNet2DConditionModel&&) noexcept = default;

const UNet2DConditionConfig& UNet2DConditionModel::config() const {
  return impl_->config;
}

Tensor UNet2DConditionModel::forward(const Tensor& sample, const Tensor& timestep,
                                     const Tensor& encoder_hidden_states,
                                     const UNet2DConditionInputs& inputs) const {
  const Impl& m = *impl_;
  const auto& c = m.config;
  DIFFUSE_CHECK(sample.dim() == 4 && sample.size(1) == c.in_channels, kOwner,
                ": sample must be [B, ", c.in_channels, ", H, W], got ", shape_str(sample.shape()));
  DIFFUSE_CHECK(encoder_hidden_states.dim() == 3 && encoder_hidden_states.size(0) == sample.size(0),
                kOwner, ": encoder_hidden_states must be [B, M, D] with B = ", sample.size(0),
                ", got ", shape_str(encoder_hidden_states.shape()));
  const int64_t batch = sample.size(0);

  // 0. Sizes that are not a multiple of the overall upsampling factor need explicit sizes.
  const int64_t up_factor = int64_t{1} << m.num_upsamplers;
  const bool forward_upsample_size =
      sample.size(2) % up_factor != 0 || sample.size(3) % up_factor != 0;

  Tensor context = encoder_hidden_states;
  Tensor context_mask;
  if (inputs.encoder_attention_mask.defined()) {
    // diffusers turns the keep-mask into an additive bias: (1 - mask) * -10000, [B, 1, M].
    const Tensor keep = inputs.encoder_attention_mask.to(DType::f32);
    context_mask = ops::mul(ops::sub(ops::neg(keep), -1.0), -10000.0).unsqueeze(1).unsqueeze(1);
  }

  // 1. Time.
  DIFFUSE_CHECK(timestep.numel() == 1 || timestep.numel() == batch, kOwner,
                ": timestep must be a scalar or hold one value per batch item (", batch,
                "), got shape ", shape_str(timestep.shape()));
  const Tensor timesteps = timestep.reshape({-1}).expand({batch}).contiguous();
  const Tensor t_emb = m.time_proj(timesteps);
  Tensor emb = m.time_embedding(t_emb, inputs.timestep_cond);
  if (m.class_embedding || m.class_embedding_table.defined()) {
    DIFFUSE_CHECK(inputs.class_labels.defined(), kOwner,
                  ": class_labels should be provided when doing class conditioning");
    Tensor class_emb;
    if (m.class_embedding_table.defined()) {
      class_emb = ops::embedding(m.class_embedding_table, inputs.class_labels);
    } else {
      Tensor labels = inputs.class_labels;
      if (*c.class_embed_type == "timestep") labels = m.time_proj(labels.reshape({-1}));
      class_emb = (*m.class_embedding)(labels.to(DType::f32));
    }
    emb = c.class_embeddings_concat ? ops::concat({emb, class_emb}, -1) : ops::add(emb, class_emb);
  } else if (c.class_embed_type && *c.class_embed_type == "identity") {
    DIFFUSE_CHECK(inputs.class_labels.defined(), kOwner,
                  ": class_labels should be provided when doing class conditioning");
    emb = ops::add(emb, inputs.class_labels.to(DType::f32));
  }
  if (m.add_embedding) {
    DIFFUSE_CHECK(inputs.text_embeds.defined() && inputs.time_ids.defined(), kOwner,
                  ": the config has addition_embed_type text_time, which requires text_embeds and "
                  "time_ids");
    const Tensor time_embeds =
        (*m.add_time_proj)(inputs.time_ids.flatten()).reshape({inputs.text_embeds.size(0), -1});
    const Tensor add_embeds = ops::concat({inputs.text_embeds.to(DType::f32), time_embeds}, -1);
    emb = ops::add(emb, (*m.add_embedding)(add_embeds));
  }
  if (m.time_embed_act) emb = ops::activation(emb, *m.time_embed_act);
  if (m.encoder_hid_proj) context = (*m.encoder_hid_proj)(context);

  // 2. Pre-process.
  Tensor h = sample;
  if (c.center_input_sample) h = ops::sub(ops::mul(h, 2.0), 1.0);
  h = m.conv_in(h);

  // 3. Down.
  std::vector<Tensor> skips{h};
  for (const auto& block : m.down_blocks) h = block.forward(h, emb, context, context_mask, skips);
  if (!inputs.down_block_additional_residuals.empty()) {
    DIFFUSE_CHECK(inputs.down_block_additional_residuals.size() == skips.size(), kOwner,
                  ": expected ", skips.size(), " down block residuals, got ",
                  inputs.down_block_additional_residuals.size());
    for (std::size_t i = 0; i < skips.size(); ++i)
      skips[i] = ops::add(skips[i], inputs.down_block_additional_residuals[i]);
  }

  // 4. Mid.
  if (m.mid_block) h = m.mid_block->forward(h, emb, context, context_mask);
  if (inputs.mid_block_additional_residual.defined())
    h = ops::add(h, inputs.mid_block_additional_residual);

  // 5. Up.
  for (std::size_t i = 0; i < m.up_blocks.size(); ++i) {
    const UpBlock& block = m.up_blocks[i];
    Shape upsample_size;
    const bool is_final = i + 1 == m.up_blocks.size();
    if (!is_final && forward_upsample_size) {
      // The size of the skip connection the next block will consume.
      const Tensor& next = skips[skips.size() - block.resnets.size() - 1];
      upsample_size = {next.size(2), next.size(3)};
    }
    h = block.forward(h, emb, context, context_mask, skips, upsample_size);
  }

  // 6. Post-process.
  h = m.conv_norm_out(h, m.act);
  return m.conv_out(h);
}

}  // namespace diffuse
