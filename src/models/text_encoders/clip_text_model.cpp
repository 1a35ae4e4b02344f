// transformers models/clip/modeling_clip.py: CLIPTextModel, CLIPTextModelWithProjection.
#include "diffuse/models/clip_text_model.h"

#include "diffuse/formats/config.h"
#include "diffuse/formats/tensor_source.h"
#include "src/nn/embeddings.h"
#include "src/nn/layers.h"

namespace diffuse {

namespace {
constexpr const char* kOwner = "CLIPTextModel";
}

CLIPTextConfig CLIPTextConfig::from_json(const nlohmann::json& json) {
  CLIPTextConfig c;
  ConfigReader r(json, kOwner);
  r.get("vocab_size", c.vocab_size);
  r.get("hidden_size", c.hidden_size);
  r.get("intermediate_size", c.intermediate_size);
  r.get("projection_dim", c.projection_dim);
  r.get("num_hidden_layers", c.num_hidden_layers);
  r.get("num_attention_heads", c.num_attention_heads);
  r.get("max_position_embeddings", c.max_position_embeddings);
  r.get("hidden_act", c.hidden_act);
  r.get("layer_norm_eps", c.layer_norm_eps);
  r.get("pad_token_id", c.pad_token_id);
  r.get("bos_token_id", c.bos_token_id);
  r.get("eos_token_id", c.eos_token_id);
  std::vector<std::string> architectures;
  r.get("architectures", architectures);
  for (const auto& a : architectures)
    if (a == "CLIPTextModelWithProjection") c.with_projection = true;
  // transformers PretrainedConfig bookkeeping and training-only settings.
  r.ignore({"attention_dropout", "dropout", "initializer_factor", "initializer_range", "model_type",
            "torch_dtype", "transformers_version", "projection_dim", "output_hidden_states",
            "return_dict", "id2label", "label2id"});
  r.finish();
  c.validate();
  return c;
}

void CLIPTextConfig::validate() const {
  DIFFUSE_CHECK(
      hidden_size > 0 && num_attention_heads > 0 && hidden_size % num_attention_heads == 0, kOwner,
      ": hidden_size ", hidden_size, " must be divisible by num_attention_heads ",
      num_attention_heads);
  DIFFUSE_CHECK(num_hidden_layers > 0 && vocab_size > 0 && max_position_embeddings > 0, kOwner,
                ": num_hidden_layers, vocab_size and max_position_embeddings must be positive");
}

namespace {

struct EncoderLayer {
  nn::LayerNorm layer_norm1, layer_norm2;
  nn::Linear q_proj, k_proj, v_proj, out_proj, fc1, fc2;
};

}  // namespace

struct CLIPTextModel::Impl {
  CLIPTextConfig config;
  DType compute = DType::f32;
  ops::Activation act = ops::Activation::quick_gelu;
  Tensor token_embedding;     // [vocab, hidden]
  Tensor position_embedding;  // [max_pos, hidden]
  std::vector<EncoderLayer> layers;
  nn::LayerNorm final_layer_norm;
  std::optional<nn::Linear> text_projection;

  Tensor layer_forward(const EncoderLayer& l, const Tensor& x) const {
    const int64_t batch = x.size(0), len = x.size(1);
    const int64_t heads = config.num_attention_heads;
    const int64_t head_dim = config.hidden_size / heads;
    // 1. Causal self-attention.
    const Tensor h = l.layer_norm1(x);
    const auto split = [&](const Tensor& t) {
      return t.view({batch, len, heads, head_dim}).transpose(1, 2);
    };
    ops::AttentionOptions o;
    o.is_causal = true;
    Tensor a =
        ops::attention(split(l.q_proj(h)), split(l.k_proj(h)), split(l.v_proj(h)), o, compute);
    a = l.out_proj(a.transpose(1, 2).reshape({batch, len, config.hidden_size}));
    const Tensor r = ops::add(x, a);
    // 2. MLP.
    const Tensor m = l.fc2(l.fc1(l.layer_norm2(r), act));
    return ops::add(r, m);
  }
};

CLIPTextModel::CLIPTextModel(const CLIPTextConfig& config, const WeightLoader& weights,
                             DType compute)
    : impl_(std::make_unique<Impl>()) {
  config.validate();
  Impl& m = *impl_;
  m.config = config;
  m.compute = compute;
  m.act = nn::parse_activation(config.hidden_act, "CLIPTextModel hidden_act");
  const int64_t d = config.hidden_size;
  const WeightLoader t = weights.scope("text_model");
  const WeightLoader e = t.scope("embeddings");
  // Embedding tables are gathered, not multiplied: activations stay f32. The token table is kept
  // in the file's own dtype when that is a half type (a zero-copy view of the mapped file of which
  // only the rows looked up are ever read) and the gathered rows are widened to f32: the same
  // values as an f32 table, without a 150 MB f32 copy of the [49408, 768] table.
  const WeightLoader te = e.scope("token_embedding");
  DType table_dtype = DType::f32;
  if (const TensorInfo* info = te.source().find(te.full_name("weight"))) {
    if (info->dtype == DType::f16 || info->dtype == DType::bf16) table_dtype = info->dtype;
  }
  m.token_embedding = te.get("weight", {config.vocab_size, d}, table_dtype);
  m.position_embedding =
      e.scope("position_embedding").get("weight", {config.max_position_embeddings, d}, DType::f32);
  // Older checkpoints carry the position_ids buffer; it is arange(max_position_embeddings).
  if (e.contains("position_ids")) (void)e.get_any("position_ids");
  for (int64_t i = 0; i < config.num_hidden_layers; ++i) {
    const WeightLoader l = t.scope("encoder").scope("layers").scope(i);
    EncoderLayer layer;
    layer.layer_norm1 = nn::LayerNorm(l.scope("layer_norm1"), d, config.layer_norm_eps);
    layer.layer_norm2 = nn::LayerNorm(l.scope("layer_norm2"), d, config.layer_norm_eps);
    const WeightLoader a = l.scope("self_attn");
    layer.q_proj = nn::Linear(a.scope("q_proj"), d, d, true, compute);
    layer.k_proj = nn::Linear(a.scope("k_proj"), d, d, true, compute);
    layer.v_proj = nn::Linear(a.scope("v_proj"), d, d, true, compute);
    layer.out_proj = nn::Linear(a.scope("out_proj"), d, d, true, compute);
    layer.fc1 = nn::Linear(l.scope("mlp").scope("fc1"), d, config.intermediate_size, true, compute);
    layer.fc2 = nn::Linear(l.scope("mlp").scope("fc2"), config.intermediate_size, d, true, compute);
    m.layers.push_back(std::move(layer));
  }
  m.final_layer_norm = nn::LayerNorm(t.scope("final_layer_norm"), d, config.layer_norm_eps);
  if (config.with_projection)
    m.text_projection.emplace(weights.scope("text_projection"), d, config.projection_dim, false,
                              compute);
}

CLIPTextModel CLIPTextModel::from_pretrained(const std::filesystem::path& folder,
                                             const ModelOptions& options) {
  const auto config = CLIPTextConfig::from_json(read_json_file(folder / "config.json"));
  WeightLoader w(open_tensor_source(folder, options.variant), options.weight_dtype);
  CLIPTextModel model(config, w, options.compute_dtype);
  w.finish();
  return model;
}

CLIPTextModel::~CLIPTextModel() = default;
CLIPTextModel::CLIPTextModel(CLIPTextModel&&) noexcept = default;
CLIPTextModel& CLIPTextModel::operator=(CLIPTextModel&&) noexcept = default;

const CLIPTextConfig& CLIPTextModel::config() const {
  return impl_->config;
}

Tensor CLIPTextModel::final_layer_norm(const Tensor& hidden) const {
  return impl_->final_layer_norm(hidden);
}

CLIPTextOutput CLIPTextModel::forward(const Tensor& input_ids, bool output_hidden_states) const {
  const Impl& m = *impl_;
  const auto& c = m.config;
  DIFFUSE_CHECK(input_ids.dim() == 2 && !is_floating(input_ids.dtype()), kOwner,
                ": input_ids must be an integer [batch, length] tensor, got ", input_ids.str());
  const int64_t batch = input_ids.size(0), len = input_ids.size(1);
  DIFFUSE_CHECK(len >= 1 && len <= c.max_position_embeddings, kOwner, ": sequence length ", len,
                " must be between 1 and max_position_embeddings (", c.max_position_embeddings, ")");

  // 1. Embeddings: token + position.
  Tensor h = ops::add(ops::embedding(m.token_embedding, input_ids).to(DType::f32),
                      m.position_embedding.narrow(0, 0, len));
  CLIPTextOutput out;
  if (output_hidden_states) out.hidden_states.push_back(h);

  // 2. Encoder layers.
  for (const auto& layer : m.layers) {
    h = m.layer_forward(layer, h);
    if (output_hidden_states) out.hidden_states.push_back(h);
  }

  // 3. Final norm and pooling.
  out.last_hidden_state = m.final_layer_norm(h);
  const auto ids = input_ids.to_vector<int64_t>();
  std::vector<Tensor> pooled;
  for (int64_t b = 0; b < batch; ++b) {
    int64_t pos = 0;
    if (c.eos_token_id == 2) {
      // transformers' legacy pooling: the position of the largest id (the eos of the original
      // CLIP vocabulary, whose id is the highest).
      for (int64_t i = 1; i < len; ++i)
        if (ids[b * len + i] > ids[b * len + pos]) pos = i;
    } else {
      for (int64_t i = 0; i < len; ++i) {
        if (ids[b * len + i] == c.eos_token_id) {
          pos = i;
          break;
        }
      }
    }
    pooled.push_back(out.last_hidden_state.select(0, b).select(0, pos).unsqueeze(0));
  }
  out.pooler_output = ops::concat(pooled, 0);
  if (m.text_projection) out.text_embeds = (*m.text_projection)(out.pooler_output);
  return out;
}

}  // namespace diffuse
