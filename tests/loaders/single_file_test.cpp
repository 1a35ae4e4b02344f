// Single-file loading (original LDM layout) and the random-weight writer: a small model with the
// SD 1.5 / SD 2.1 config structure (channels scaled down so it runs in seconds) is written as a
// diffusers folder and as LDM single files (safetensors and .ckpt); both loads must give
// identical UNet / VAE / text-encoder outputs.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>

#include "diffuse/core/generator.h"
#include "diffuse/core/threads.h"
#include "diffuse/formats/config.h"
#include "diffuse/formats/safetensors.h"
#include "diffuse/loaders/random_weights.h"
#include "diffuse/loaders/single_file.h"
#include "src/loaders/remapped_source.h"
#include "tests/formats/writers.h"
#include "tests/loaders/helpers.h"
#include "tests/support/reference.h"

namespace diffuse {
namespace {

namespace fs = std::filesystem;
using loader_tests::count_params;
using loader_tests::expect_error;
using loader_tests::expect_identical;
using loader_tests::write_ckpt;
using loader_tests::write_json;
using nlohmann::json;

// SD 1.5's unet/vae/text_encoder configs with channels, widths and depths scaled down.
json small_unet(bool sd2) {
  json u = {
      {"_class_name", "UNet2DConditionModel"},
      {"act_fn", "silu"},
      {"attention_head_dim", 8},
      {"block_out_channels", {32, 64, 64, 64}},
      {"center_input_sample", false},
      {"cross_attention_dim", 32},
      {"down_block_types",
       {"CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"}},
      {"downsample_padding", 1},
      {"flip_sin_to_cos", true},
      {"freq_shift", 0},
      {"in_channels", 4},
      {"layers_per_block", 2},
      {"mid_block_scale_factor", 1},
      {"norm_eps", 1e-05},
      {"norm_num_groups", 32},
      {"out_channels", 4},
      {"sample_size", 8},
      {"up_block_types",
       {"UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"}}};
  if (sd2) {  // SD 2.1's options: per-block heads, linear projections, upcast attention
    u["attention_head_dim"] = {2, 4, 8, 8};
    u["use_linear_projection"] = true;
    u["upcast_attention"] = true;
  }
  return u;
}

json small_vae() {
  return {
      {"_class_name", "AutoencoderKL"},
      {"act_fn", "silu"},
      {"block_out_channels", {32, 32, 64, 64}},
      {"down_block_types",
       {"DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"}},
      {"in_channels", 3},
      {"latent_channels", 4},
      {"layers_per_block", 2},
      {"norm_num_groups", 32},
      {"out_channels", 3},
      {"sample_size", 32},
      {"up_block_types",
       {"UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"}}};
}

json small_text_encoder(bool sd2) {
  return {{"architectures", {"CLIPTextModel"}},
          {"model_type", "clip_text_model"},
          {"bos_token_id", 0},
          {"eos_token_id", 2},
          {"pad_token_id", 1},
          {"hidden_act", sd2 ? "gelu" : "quick_gelu"},
          {"hidden_size", 32},
          {"intermediate_size", 64},
          {"layer_norm_eps", 1e-05},
          {"max_position_embeddings", 77},
          {"num_attention_heads", 4},
          {"num_hidden_layers", sd2 ? 3 : 2},
          {"projection_dim", 32},
          {"vocab_size", 49408}};
}

// A diffusers pipeline folder of configs (no weights).
void write_config_folder(const fs::path& root, bool sd2) {
  write_json(root / "model_index.json", {{"_class_name", "StableDiffusionPipeline"},
                                         {"scheduler", {"diffusers", "PNDMScheduler"}},
                                         {"text_encoder", {"transformers", "CLIPTextModel"}},
                                         {"tokenizer", {"transformers", "CLIPTokenizer"}},
                                         {"unet", {"diffusers", "UNet2DConditionModel"}},
                                         {"vae", {"diffusers", "AutoencoderKL"}}});
  write_json(root / "unet" / "config.json", small_unet(sd2));
  write_json(root / "vae" / "config.json", small_vae());
  write_json(root / "text_encoder" / "config.json", small_text_encoder(sd2));
  write_json(root / "scheduler" / "scheduler_config.json", {{"_class_name", "PNDMScheduler"},
                                                            {"beta_end", 0.012},
                                                            {"beta_schedule", "scaled_linear"},
                                                            {"beta_start", 0.00085},
                                                            {"num_train_timesteps", 1000},
                                                            {"set_alpha_to_one", false},
                                                            {"skip_prk_steps", true},
                                                            {"steps_offset", 1}});
}

// Runs the three models of `a` and `b` on the same inputs; outputs must be bitwise identical.
void expect_same_models(const StableDiffusionComponents& a, const StableDiffusionComponents& b) {
  Generator g(7);
  const Tensor sample = g.randn({1, 4, 8, 8});
  const Tensor ehs = g.randn({1, 5, 32});
  const Tensor t = Tensor::from_vector(std::vector<int64_t>{500}, {1}, DType::i64);
  expect_identical(a.unet->forward(sample, t, ehs), b.unet->forward(sample, t, ehs), "unet");
  const Tensor image = g.randn({1, 3, 32, 32});
  expect_identical(a.vae->encode(image).mean, b.vae->encode(image).mean, "vae encode");
  const Tensor latents = g.randn({1, 4, 4, 4});
  expect_identical(a.vae->decode(latents), b.vae->decode(latents), "vae decode");
  const Tensor ids =
      Tensor::from_vector(std::vector<int64_t>{0, 17, 250, 999, 3, 2, 1}, {1, 7}, DType::i64);
  expect_identical(a.text_encoder->forward(ids).last_hidden_state,
                   b.text_encoder->forward(ids).last_hidden_state, "text_encoder");
}

StableDiffusionComponents load_diffusers_models(const fs::path& folder) {
  StableDiffusionComponents c;
  c.unet = std::make_shared<UNet2DConditionModel>(
      UNet2DConditionModel::from_pretrained(folder / "unet"));
  c.vae = std::make_shared<AutoencoderKL>(AutoencoderKL::from_pretrained(folder / "vae"));
  c.text_encoder =
      std::make_shared<CLIPTextModel>(CLIPTextModel::from_pretrained(folder / "text_encoder"));
  return c;
}

class SingleFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::temp_dir("loaders");
    // The models here are tiny: one thread is faster than waking a team for every op, and
    // keeps the test quick on a busy CI machine.
    threads_ = num_threads();
    set_num_threads(1);
  }
  void TearDown() override {
    set_num_threads(threads_);
    fs::remove_all(dir_);
  }

  // Random-weight diffusers folder of the small model.
  fs::path make_pipeline(bool sd2, uint64_t seed = 1) {
    const fs::path configs = dir_ / (sd2 ? "configs2" : "configs1");
    write_config_folder(configs, sd2);
    const fs::path out = dir_ / (sd2 ? "diffusers2" : "diffusers1");
    RandomWeightsOptions o;
    o.seed = seed;
    o.std = 0.2;  // large enough that every layer visibly changes the outputs
    const auto files = write_random_weights(configs, out, o);
    EXPECT_EQ(files.size(), 3u);
    return out;
  }
  fs::path dir_;
  int threads_ = 1;
};

TEST_F(SingleFileTest, Sd1SafetensorsAndCkptMatchDiffusersFolder) {
  const fs::path folder = make_pipeline(false);
  const fs::path st = dir_ / "sd1.safetensors";
  save_single_file(folder, st, LdmTextEncoderLayout::clip);
  // The file is in the original layout, not the diffusers one.
  const auto file = open_tensor_source(st);
  EXPECT_TRUE(file->contains("model.diffusion_model.input_blocks.1.0.in_layers.0.weight"));
  EXPECT_TRUE(file->contains("model.diffusion_model.output_blocks.5.2.conv.weight"));
  EXPECT_EQ(file->info("first_stage_model.encoder.mid.attn_1.q.weight").shape,
            (Shape{64, 64, 1, 1}));
  // The VAE's 1x1-conv attention weights are seen as linear [C, C] views of the file.
  const auto vae = ldm_vae_source(file, AutoencoderKLConfig::from_json(small_vae()));
  const Tensor q = vae->get("encoder.mid_block.attentions.0.to_q.weight");
  EXPECT_EQ(q.shape(), (Shape{64, 64}));
  EXPECT_EQ(q.data_ptr(), file->get("first_stage_model.encoder.mid.attn_1.q.weight").data_ptr());
  EXPECT_TRUE(file->contains("cond_stage_model.transformer.text_model.final_layer_norm.weight"));
  EXPECT_EQ(infer_single_file_model_type(*file), SingleFileModelType::v1);

  const auto reference = load_diffusers_models(folder);
  SingleFileOptions o;
  o.config = folder;
  expect_same_models(reference, load_single_file_models(st, o));

  const fs::path ckpt = dir_ / "sd1.ckpt";
  write_ckpt(ckpt, diffusers_to_ldm(folder, LdmTextEncoderLayout::clip), 470000);
  const auto from_ckpt = load_single_file_models(ckpt, o);
  expect_same_models(reference, from_ckpt);
  EXPECT_NE(from_ckpt.scheduler, nullptr);

  // .ckpt scalars reach the prediction-type inference (SD 2 base is told by its global_step).
  write_ckpt(dir_ / "step.ckpt", {{"x", Tensor::zeros({1})}}, 875000);
  const auto step = open_tensor_source(dir_ / "step.ckpt");
  EXPECT_EQ(infer_prediction_type(SingleFileModelType::v2, *step), "epsilon");
  EXPECT_EQ(infer_prediction_type(SingleFileModelType::v2, *open_tensor_source(ckpt)),
            "v_prediction");
  EXPECT_EQ(infer_prediction_type(SingleFileModelType::v1, *step), "epsilon");
}

TEST_F(SingleFileTest, Sd2OpenClipFusedAttentionMatchesDiffusersFolder) {
  const fs::path folder = make_pipeline(true);
  auto tensors = diffusers_to_ldm(folder, LdmTextEncoderLayout::open_clip);
  std::set<std::string> names;
  for (const auto& [n, t] : tensors) names.insert(n);
  ASSERT_TRUE(names.count("cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight"));
  EXPECT_FALSE(names.count("cond_stage_model.model.transformer.resblocks.0.attn.q_proj.weight"));
  // A real SD 2 file carries one resblock more than the config uses (penultimate layer), the
  // CLIP temperature and a projection: all must be ignored.
  Generator g(3);
  const std::string extra = "cond_stage_model.model.transformer.resblocks.3.";
  tensors.emplace_back(extra + "attn.in_proj_weight", g.randn({96, 32}));
  tensors.emplace_back(extra + "ln_1.weight", g.randn({32}));
  tensors.emplace_back("cond_stage_model.model.logit_scale", g.randn({1}));
  tensors.emplace_back("cond_stage_model.model.text_projection", g.randn({32, 32}));
  const fs::path st = dir_ / "sd2.safetensors";
  save_safetensors(st, tensors);

  const auto reference = load_diffusers_models(folder);
  SingleFileOptions o;
  o.config = folder;
  expect_same_models(reference, load_single_file_models(st, o));

  // The q/k/v views split the fused tensor exactly.
  const auto ckpt = open_tensor_source(st);
  const auto te = open_clip_source(ckpt, CLIPTextConfig::from_json(small_text_encoder(true)));
  const Tensor fused =
      ckpt->get("cond_stage_model.model.transformer.resblocks.1.attn.in_proj_weight");
  const Tensor k = te->get("text_model.encoder.layers.1.self_attn.k_proj.weight");
  EXPECT_EQ(k.to_vector<float>(), fused.narrow(0, 32, 32).contiguous().to_vector<float>());
  // Zero-copy: the k rows are a view into the memory-mapped file.
  EXPECT_EQ(static_cast<const char*>(k.data_ptr()),
            static_cast<const char*>(fused.data_ptr()) + 32 * 32 * sizeof(float));
  EXPECT_FALSE(te->contains("text_model.encoder.layers.3.layer_norm1.weight"));
}

TEST_F(SingleFileTest, MalformedCheckpointsNameTheTensor) {
  const fs::path folder = make_pipeline(false);
  SingleFileOptions o;
  o.config = folder;
  const auto tensors = diffusers_to_ldm(folder, LdmTextEncoderLayout::clip);
  const auto write_without = [&](const std::string& drop, const fs::path& path,
                                 std::optional<Tensor> replacement = std::nullopt) {
    std::vector<std::pair<std::string, Tensor>> kept;
    for (const auto& [n, t] : tensors) {
      if (n != drop) {
        kept.emplace_back(n, t);
      } else if (replacement) {
        kept.emplace_back(n, *replacement);
      }
    }
    save_safetensors(path, kept);
  };
  const std::string resnet = "model.diffusion_model.input_blocks.1.0.in_layers.0.weight";
  write_without(resnet, dir_ / "missing.safetensors");
  expect_error([&] { load_single_file_models(dir_ / "missing.safetensors", o); },
               {"missing tensor", resnet, "down_blocks.0.resnets.0.norm1.weight",
                (dir_ / "missing.safetensors").string()});

  const std::string q = "first_stage_model.encoder.mid.attn_1.q.weight";
  write_without(q, dir_ / "shape.safetensors", Tensor::zeros({64, 32, 1, 1}));
  expect_error([&] { load_single_file_models(dir_ / "shape.safetensors", o); },
               {q, "[64, 32]", "[64, 64]"});

  const std::string te = "cond_stage_model.transformer.text_model.encoder.layers.1.mlp.fc2.bias";
  write_without(te, dir_ / "te.safetensors");
  expect_error([&] { load_single_file_models(dir_ / "te.safetensors", o); }, {te});

  // No UNet at all: not an original SD checkpoint.
  save_safetensors(dir_ / "other.safetensors", {{"weight", Tensor::zeros({2})}});
  expect_error([&] { load_single_file_models(dir_ / "other.safetensors", o); },
               {"model.diffusion_model.input_blocks.0.0.weight", "not an original"});

  // Without a tokenizer folder from_single_file says what to pass.
  save_single_file(folder, dir_ / "ok.safetensors");
  expect_error([&] { from_single_file(dir_ / "ok.safetensors"); }, {"tokenizer", "vocab.json"});
}

TEST_F(SingleFileTest, FromSingleFileWithTokenizerMatchesFromPretrained) {
  const fs::path tokenizer = fs::path(testing::shared_dir()) / "assets" / "clip-tokenizer";
  if (!fs::exists(tokenizer / "vocab.json")) GTEST_SKIP() << "no CLIP tokenizer at " << tokenizer;
  const fs::path folder = make_pipeline(false);
  for (const char* f :
       {"vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"})
    if (fs::exists(tokenizer / f)) {
      fs::create_directories(folder / "tokenizer");
      fs::copy_file(tokenizer / f, folder / "tokenizer" / f, fs::copy_options::overwrite_existing);
    }
  save_single_file(folder, dir_ / "sd.safetensors");
  SingleFileOptions o;
  o.config = folder;
  o.tokenizer = folder / "tokenizer";
  const auto a = StableDiffusionComponents::from_pretrained(folder);
  const auto b = from_single_file(dir_ / "sd.safetensors", o);
  ASSERT_NE(b.tokenizer, nullptr);
  expect_same_models(a, b);
  const auto pa =
      encode_prompt(a, "a photo of a cat", 1, true, std::string("blurry"), std::nullopt);
  const auto pb =
      encode_prompt(b, "a photo of a cat", 1, true, std::string("blurry"), std::nullopt);
  expect_identical(pa.prompt_embeds, pb.prompt_embeds, "prompt_embeds");
  expect_identical(pa.negative_prompt_embeds, pb.negative_prompt_embeds, "negative_prompt_embeds");
}

// --- detection ----------------------------------------------------------------------------------

std::shared_ptr<MemoryTensorSource> keys(std::vector<std::pair<std::string, Shape>> entries) {
  auto s = std::make_shared<MemoryTensorSource>("keys");
  for (const auto& [n, shape] : entries) {
    // Broadcast zeros: the shape without the memory.
    s->insert(n, Tensor::zeros(Shape(shape.size(), 1)).expand(shape));
  }
  return s;
}

TEST(SingleFileDetection, InfersModelTypesLikeDiffusers) {
  const std::string conv_in = "model.diffusion_model.input_blocks.0.0.weight";
  const std::string to_k =
      "model.diffusion_model.input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight";
  const std::string xl = "conditioner.embedders.1.model.transformer.resblocks.9.mlp.c_proj.bias";
  const std::string refiner =
      "conditioner.embedders.0.model.transformer.resblocks.9.mlp.c_proj.bias";
  using T = SingleFileModelType;
  EXPECT_EQ(infer_single_file_model_type(*keys({{conv_in, {320, 4, 3, 3}}, {to_k, {320, 768}}})),
            T::v1);
  EXPECT_EQ(infer_single_file_model_type(*keys({{conv_in, {320, 4, 3, 3}}, {to_k, {320, 1024}}})),
            T::v2);
  EXPECT_EQ(infer_single_file_model_type(*keys({{conv_in, {320, 9, 3, 3}}, {to_k, {320, 768}}})),
            T::inpainting);
  EXPECT_EQ(infer_single_file_model_type(*keys({{conv_in, {320, 9, 3, 3}}, {to_k, {320, 1024}}})),
            T::inpainting_v2);
  EXPECT_EQ(infer_single_file_model_type(*keys({{conv_in, {320, 4, 3, 3}}, {xl, {1280}}})),
            T::xl_base);
  EXPECT_EQ(infer_single_file_model_type(*keys({{conv_in, {320, 9, 3, 3}}, {xl, {1280}}})),
            T::xl_inpaint);
  EXPECT_EQ(infer_single_file_model_type(*keys({{conv_in, {384, 4, 3, 3}}, {refiner, {1280}}})),
            T::xl_refiner);
  expect_error(
      [&] {
        infer_single_file_model_type(*keys({{"first_stage_model.x", {1}}}));
      },
      {"not an original Stable Diffusion checkpoint"});
}

TEST(SingleFileDetection, DefaultConfigsFollowTheModelType) {
  using T = SingleFileModelType;
  const auto v1 = default_single_file_configs(T::v1);
  EXPECT_EQ(v1.unet["cross_attention_dim"], 768);
  EXPECT_EQ(v1.scheduler["_class_name"], "PNDMScheduler");
  const auto v2 = default_single_file_configs(T::v2, "v_prediction");
  EXPECT_EQ(v2.unet["cross_attention_dim"], 1024);
  EXPECT_EQ(v2.unet["sample_size"], 96);
  EXPECT_EQ(v2.scheduler["prediction_type"], "v_prediction");
  EXPECT_EQ(v2.text_encoder["num_hidden_layers"], 23);
  const auto v2_base = default_single_file_configs(T::v2, "epsilon");
  EXPECT_EQ(v2_base.unet["sample_size"], 64);
  EXPECT_EQ(v2_base.scheduler["prediction_type"], "epsilon");
  EXPECT_EQ(default_single_file_configs(T::inpainting).unet["in_channels"], 9);
  EXPECT_EQ(default_single_file_configs(T::inpainting_v2).unet["in_channels"], 9);

  // The built-in configs are the real ones.
  const fs::path assets = fs::path(testing::shared_dir()) / "assets" / "model-configs";
  if (!fs::exists(assets)) GTEST_SKIP() << "no model configs at " << assets;
  auto strip = [](json j) {
    j.erase("_diffusers_version");
    j.erase("_name_or_path");
    return j;
  };
  EXPECT_EQ(v1.unet,
            strip(read_json_file(assets / "runwayml/stable-diffusion-v1-5/unet/config.json")));
  EXPECT_EQ(v1.vae,
            strip(read_json_file(assets / "runwayml/stable-diffusion-v1-5/vae/config.json")));
  EXPECT_EQ(
      default_single_file_configs(T::v2).text_encoder,
      strip(read_json_file(assets / "stabilityai/stable-diffusion-2-1/text_encoder/config.json")));
}

TEST_F(SingleFileTest, SdxlFilesPointToTheXlLoader) {
  save_safetensors(dir_ / "xl.safetensors",
                   {{"model.diffusion_model.input_blocks.0.0.weight", Tensor::zeros({8, 4, 3, 3})},
                    {"conditioner.embedders.1.model.transformer.resblocks.9.mlp.c_proj.bias",
                     Tensor::zeros({8})}});
  expect_error(
      [&] { load_single_file_models(dir_ / "xl.safetensors"); },
      {"SDXL base single file (xl_base)", "load_single_file_xl_models", "from_single_file_xl"});
}

// --- key maps at full size ----------------------------------------------------------------------

fs::path model_configs() {
  return fs::path(testing::shared_dir()) / "assets" / "model-configs";
}

TEST(SingleFileKeyMaps, FullSizeSd15MapsEveryTensorBothWays) {
  using loaders::LeafKind;
  const auto cfg = default_single_file_configs(SingleFileModelType::v1);
  // Construction only (broadcast weights): the real SD 1.5 parameter counts.
  const auto unet = model_weight_specs(cfg.unet);
  const auto vae = model_weight_specs(cfg.vae);
  const auto te = model_weight_specs(cfg.text_encoder);
  EXPECT_EQ(count_params(unet), 859520964);
  EXPECT_EQ(count_params(vae), 83653863);
  EXPECT_EQ(count_params(te), 123060480);
  EXPECT_EQ(unet.size(), 686u);

  const auto umap = loaders::unet_key_map(UNet2DConditionConfig::from_json(cfg.unet));
  std::set<std::string> ldm;
  for (const auto& s : unet) {
    const auto l = umap.to_ldm(s.name, nullptr);
    ASSERT_TRUE(l.has_value()) << s.name;
    EXPECT_TRUE(ldm.insert(*l).second) << "two tensors map to " << *l;
    EXPECT_EQ(umap.to_diffusers(*l, nullptr), s.name);
  }
  EXPECT_EQ(umap.to_ldm("down_blocks.0.resnets.0.norm1.weight", nullptr),
            "input_blocks.1.0.in_layers.0.weight");
  EXPECT_EQ(umap.to_ldm("down_blocks.1.resnets.0.conv_shortcut.weight", nullptr),
            "input_blocks.4.0.skip_connection.weight");
  EXPECT_EQ(umap.to_ldm("down_blocks.0.downsamplers.0.conv.weight", nullptr),
            "input_blocks.3.0.op.weight");
  EXPECT_EQ(umap.to_ldm("down_blocks.3.resnets.1.time_emb_proj.bias", nullptr),
            "input_blocks.11.0.emb_layers.1.bias");
  EXPECT_EQ(umap.to_ldm("mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight", nullptr),
            "middle_block.1.transformer_blocks.0.attn2.to_k.weight");
  EXPECT_EQ(umap.to_ldm("mid_block.resnets.1.conv2.weight", nullptr),
            "middle_block.2.out_layers.3.weight");
  EXPECT_EQ(umap.to_ldm("up_blocks.0.upsamplers.0.conv.weight", nullptr),
            "output_blocks.2.1.conv.weight");
  EXPECT_EQ(umap.to_ldm("up_blocks.1.upsamplers.0.conv.weight", nullptr),
            "output_blocks.5.2.conv.weight");
  EXPECT_EQ(umap.to_ldm("up_blocks.3.attentions.2.proj_out.bias", nullptr),
            "output_blocks.11.1.proj_out.bias");
  EXPECT_EQ(umap.to_ldm("time_embedding.linear_2.weight", nullptr), "time_embed.2.weight");
  EXPECT_EQ(umap.to_ldm("conv_norm_out.bias", nullptr), "out.0.bias");

  const auto vmap = loaders::vae_key_map(AutoencoderKLConfig::from_json(cfg.vae));
  ldm.clear();
  for (const auto& s : vae) {
    const auto l = vmap.to_ldm(s.name, nullptr);
    ASSERT_TRUE(l.has_value()) << s.name;
    EXPECT_TRUE(ldm.insert(*l).second) << *l;
    EXPECT_EQ(vmap.to_diffusers(*l, nullptr), s.name);
  }
  LeafKind leaf = LeafKind::plain;
  EXPECT_EQ(vmap.to_ldm("decoder.up_blocks.0.resnets.2.conv1.weight", &leaf),
            "decoder.up.3.block.2.conv1.weight");
  EXPECT_EQ(vmap.to_ldm("decoder.up_blocks.3.upsamplers.0.conv.weight", nullptr), std::nullopt);
  EXPECT_EQ(vmap.to_ldm("decoder.up_blocks.2.upsamplers.0.conv.weight", nullptr),
            "decoder.up.1.upsample.conv.weight");
  EXPECT_EQ(vmap.to_ldm("encoder.down_blocks.1.resnets.0.conv_shortcut.weight", nullptr),
            "encoder.down.1.block.0.nin_shortcut.weight");
  EXPECT_EQ(vmap.to_ldm("encoder.mid_block.attentions.0.to_out.0.weight", &leaf),
            "encoder.mid.attn_1.proj_out.weight");
  EXPECT_EQ(leaf, LeafKind::vae_attention);
  EXPECT_EQ(vmap.to_ldm("decoder.conv_norm_out.weight", nullptr), "decoder.norm_out.weight");
}

TEST(SingleFileKeyMaps, RealConfigsOfTheAssetsBuild) {
  const fs::path root = model_configs();
  if (!fs::exists(root)) GTEST_SKIP() << "no model configs at " << root;
  // (config, parameter count as published for the model)
  const std::vector<std::pair<std::string, int64_t>> cases = {
      {"runwayml/stable-diffusion-v1-5/unet", 859520964},
      {"runwayml/stable-diffusion-v1-5/vae", 83653863},
      {"runwayml/stable-diffusion-v1-5/text_encoder", 123060480},
      {"runwayml/stable-diffusion-inpainting/unet", 859535364},
      {"stabilityai/stable-diffusion-2-1/unet", 865910724},
      {"stabilityai/stable-diffusion-2-1/text_encoder", 340387840},
      {"stabilityai/stable-diffusion-xl-base-1.0/unet", 2567463684},
  };
  for (const auto& [path, params] : cases) {
    const auto specs = model_weight_specs(read_json_file(root / path / "config.json"), DType::bf16);
    EXPECT_EQ(count_params(specs), params) << path;
    EXPECT_EQ(specs.at(0).dtype, DType::bf16) << path;
  }
  // The SDXL UNet's add_embedding maps to label_emb.
  const auto xl = UNet2DConditionConfig::from_json(
      read_json_file(root / "stabilityai/stable-diffusion-xl-base-1.0/unet/config.json"));
  const auto m = loaders::unet_key_map(xl);
  EXPECT_EQ(m.to_ldm("add_embedding.linear_1.weight", nullptr), "label_emb.0.0.weight");
  EXPECT_EQ(m.to_ldm("down_blocks.1.attentions.0.transformer_blocks.1.attn1.to_q.weight", nullptr),
            "input_blocks.4.1.transformer_blocks.1.attn1.to_q.weight");
}

// --- random weights
// -------------------------------------------------------------------------------

TEST_F(SingleFileTest, RandomWeightsAreDeterministicAndComplete) {
  write_json(dir_ / "vae" / "config.json", small_vae());
  RandomWeightsOptions o;
  o.seed = 5;
  o.dtype = DType::bf16;
  write_random_weights(dir_ / "vae", dir_ / "a.safetensors", o);
  write_random_weights(dir_ / "vae" / "config.json", dir_ / "b", o);
  o.seed = 6;
  write_random_weights(dir_ / "vae", dir_ / "c.safetensors", o);
  const auto read = [](const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  EXPECT_EQ(read(dir_ / "a.safetensors"), read(dir_ / "b" / "diffusion_pytorch_model.safetensors"));
  EXPECT_NE(read(dir_ / "a.safetensors"), read(dir_ / "c.safetensors"));
  EXPECT_TRUE(fs::exists(dir_ / "b" / "config.json"));

  const auto specs = model_weight_specs(small_vae(), DType::bf16);
  const auto file = open_tensor_source(dir_ / "a.safetensors");
  ASSERT_EQ(file->tensors().size(), specs.size());
  for (const auto& s : specs) {
    const TensorInfo& i = file->info(s.name);
    EXPECT_EQ(i.shape, s.shape) << s.name;
    EXPECT_EQ(i.dtype, DType::bf16) << s.name;
  }
  // Weights are N(0, 0.02^2), biases 0, norm weights 1 (RandomTensorSource).
  const auto w = file->get("encoder.conv_in.weight", DType::f32).to_vector<float>();
  double sq = 0;
  for (const float v : w) sq += double(v) * v;
  EXPECT_NEAR(std::sqrt(sq / w.size()), 0.02, 0.004);
  EXPECT_EQ(file->get("encoder.conv_in.bias", DType::f32).to_vector<float>(),
            std::vector<float>(32, 0.f));
  EXPECT_EQ(file->get("encoder.conv_norm_out.weight", DType::f32).to_vector<float>(),
            std::vector<float>(64, 1.f));

  write_json(dir_ / "bad" / "config.json", {{"_class_name", "SD3Transformer2DModel"}});
  expect_error([&] { write_random_weights(dir_ / "bad", dir_ / "bad_out"); },
               {"SD3Transformer2DModel", "UNet2DConditionModel"});
}

}  // namespace
}  // namespace diffuse
