// SDXL single files (original SGM layout): small SDXL base-, refiner- and inpainting-like models
// (the real configs' structure with channels, widths and depths scaled down) are written as
// diffusers folders and as single files (safetensors and .ckpt); both loads must give bitwise
// identical UNet (with text_embeds / time_ids), VAE and text-encoder outputs. Also detection,
// the built-in configs, the key maps at full size, malformed files and `diffuse info`.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <set>

#include "diffuse/core/generator.h"
#include "diffuse/core/threads.h"
#include "diffuse/formats/config.h"
#include "diffuse/formats/image.h"
#include "diffuse/formats/safetensors.h"
#include "diffuse/loaders/random_weights.h"
#include "diffuse/loaders/single_file.h"
#include "src/loaders/remapped_source.h"
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

enum class Variant { base, refiner, inpaint };

// Widths of the small encoders: CLIP ViT-L-like (text_encoder) and bigG-like (text_encoder_2,
// projection_dim != hidden_size so that a missing transpose of text_projection cannot pass).
constexpr int64_t kClipHidden = 32;
constexpr int64_t kBigGHidden = 48;
constexpr int64_t kProjection = 24;
constexpr int64_t kTimeEmbedDim = 8;
// diffusers tells SDXL files by their bigG's resblocks.9: the small bigG needs 10 layers.
constexpr int64_t kBigGLayers = 10;

// The SDXL base / refiner UNet configs, scaled down.
json small_xl_unet(Variant v) {
  json u = {{"_class_name", "UNet2DConditionModel"},
            {"act_fn", "silu"},
            {"addition_embed_type", "text_time"},
            {"addition_embed_type_num_heads", 64},
            {"addition_time_embed_dim", kTimeEmbedDim},
            {"center_input_sample", false},
            {"flip_sin_to_cos", true},
            {"freq_shift", 0},
            {"in_channels", v == Variant::inpaint ? 9 : 4},
            {"layers_per_block", 2},
            {"mid_block_type", "UNetMidBlock2DCrossAttn"},
            {"norm_eps", 1e-05},
            {"norm_num_groups", 32},
            {"out_channels", 4},
            {"sample_size", 8},
            {"use_linear_projection", true}};
  if (v == Variant::refiner) {
    // stable-diffusion-xl-refiner-1.0: four blocks, 4 transformer layers everywhere, bigG
    // context only, aesthetic score instead of the target size (5 time ids).
    u["attention_head_dim"] = {2, 4, 4, 4};
    u["block_out_channels"] = {32, 64, 64, 64};
    u["down_block_types"] = {"DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                             "DownBlock2D"};
    u["up_block_types"] = {"UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"};
    u["transformer_layers_per_block"] = 2;
    u["cross_attention_dim"] = kBigGHidden;
    u["projection_class_embeddings_input_dim"] = 5 * kTimeEmbedDim + kProjection;
  } else {
    // stable-diffusion-xl-base-1.0: three blocks, [1, 2, 10] transformer layers, CLIP-L and
    // bigG contexts concatenated, 6 time ids.
    u["attention_head_dim"] = {2, 4, 4};
    u["block_out_channels"] = {32, 64, 64};
    u["down_block_types"] = {"DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"};
    u["up_block_types"] = {"CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"};
    u["transformer_layers_per_block"] = {1, 2, 3};
    u["cross_attention_dim"] = kClipHidden + kBigGHidden;
    u["projection_class_embeddings_input_dim"] = 6 * kTimeEmbedDim + kProjection;
  }
  return u;
}

json small_xl_vae() {
  return {
      {"_class_name", "AutoencoderKL"},
      {"act_fn", "silu"},
      {"block_out_channels", {32, 32, 64, 64}},
      {"down_block_types",
       {"DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"}},
      {"force_upcast", true},
      {"in_channels", 3},
      {"latent_channels", 4},
      {"layers_per_block", 2},
      {"norm_num_groups", 32},
      {"out_channels", 3},
      {"sample_size", 32},
      {"scaling_factor", 0.13025},
      {"up_block_types",
       {"UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"}}};
}

json small_clip_l() {
  return {{"architectures", {"CLIPTextModel"}},
          {"model_type", "clip_text_model"},
          {"bos_token_id", 0},
          {"eos_token_id", 2},
          {"pad_token_id", 1},
          {"hidden_act", "quick_gelu"},
          {"hidden_size", kClipHidden},
          {"intermediate_size", 64},
          {"layer_norm_eps", 1e-05},
          {"max_position_embeddings", 77},
          {"num_attention_heads", 4},
          {"num_hidden_layers", 2},
          {"projection_dim", kClipHidden},
          {"vocab_size", 49408}};
}

json small_big_g(bool with_projection = true) {
  return {{"architectures", {with_projection ? "CLIPTextModelWithProjection" : "CLIPTextModel"}},
          {"model_type", "clip_text_model"},
          {"bos_token_id", 0},
          {"eos_token_id", 2},
          {"pad_token_id", 1},
          {"hidden_act", "gelu"},
          {"hidden_size", kBigGHidden},
          {"intermediate_size", 96},
          {"layer_norm_eps", 1e-05},
          {"max_position_embeddings", 77},
          {"num_attention_heads", 4},
          {"num_hidden_layers", kBigGLayers},
          {"projection_dim", kProjection},
          {"vocab_size", 49408}};
}

// A diffusers SDXL pipeline folder of configs (no weights), laid out like the Hub repos: the
// refiner declares text_encoder / tokenizer as [null, null].
void write_xl_config_folder(const fs::path& root, Variant v) {
  json index = {{"_class_name", v == Variant::refiner   ? "StableDiffusionXLImg2ImgPipeline"
                                : v == Variant::inpaint ? "StableDiffusionXLInpaintPipeline"
                                                        : "StableDiffusionXLPipeline"},
                {"force_zeros_for_empty_prompt", v != Variant::refiner},
                {"scheduler", {"diffusers", "EulerDiscreteScheduler"}},
                {"text_encoder_2", {"transformers", "CLIPTextModelWithProjection"}},
                {"tokenizer_2", {"transformers", "CLIPTokenizer"}},
                {"unet", {"diffusers", "UNet2DConditionModel"}},
                {"vae", {"diffusers", "AutoencoderKL"}}};
  if (v == Variant::refiner) {
    index["requires_aesthetics_score"] = true;
    index["text_encoder"] = {nullptr, nullptr};
    index["tokenizer"] = {nullptr, nullptr};
  } else {
    index["text_encoder"] = {"transformers", "CLIPTextModel"};
    index["tokenizer"] = {"transformers", "CLIPTokenizer"};
    write_json(root / "text_encoder" / "config.json", small_clip_l());
  }
  write_json(root / "model_index.json", index);
  write_json(root / "unet" / "config.json", small_xl_unet(v));
  write_json(root / "vae" / "config.json", small_xl_vae());
  write_json(root / "text_encoder_2" / "config.json", small_big_g());
  write_json(root / "scheduler" / "scheduler_config.json",
             {{"_class_name", "EulerDiscreteScheduler"},
              {"beta_end", 0.012},
              {"beta_schedule", "scaled_linear"},
              {"beta_start", 0.00085},
              {"num_train_timesteps", 1000},
              {"prediction_type", "epsilon"},
              {"steps_offset", 1},
              {"timestep_spacing", "leading"}});
}

StableDiffusionXLComponents load_diffusers_xl_models(const fs::path& folder) {
  StableDiffusionXLComponents c;
  c.unet = std::make_shared<UNet2DConditionModel>(
      UNet2DConditionModel::from_pretrained(folder / "unet"));
  c.vae = std::make_shared<AutoencoderKL>(AutoencoderKL::from_pretrained(folder / "vae"));
  if (fs::exists(folder / "text_encoder"))
    c.text_encoder =
        std::make_shared<CLIPTextModel>(CLIPTextModel::from_pretrained(folder / "text_encoder"));
  c.text_encoder_2 =
      std::make_shared<CLIPTextModel>(CLIPTextModel::from_pretrained(folder / "text_encoder_2"));
  return c;
}

// Runs every model of `a` and `b` on the same inputs; outputs must be bitwise identical.
void expect_same_xl_models(const StableDiffusionXLComponents& a,
                           const StableDiffusionXLComponents& b) {
  Generator g(11);
  ASSERT_NE(b.unet, nullptr);
  const auto& uc = a.unet->config();
  const int64_t context = uc.cross_attention_dim.values.at(0);
  const int64_t time_ids = (uc.projection_class_embeddings_input_dim.value() - kProjection) /
                           uc.addition_time_embed_dim.value();
  const Tensor sample = g.randn({1, uc.in_channels, 8, 8});
  const Tensor ehs = g.randn({1, 5, context});
  const Tensor t = Tensor::from_vector(std::vector<int64_t>{500}, {1}, DType::i64);
  UNet2DConditionInputs in;
  in.text_embeds = g.randn({1, kProjection});
  std::vector<float> ids = {1024, 1024, 0, 0, 1024, 1024};
  ids.resize(static_cast<std::size_t>(time_ids));
  if (time_ids == 5) ids[4] = 6.0f;  // aesthetic score
  in.time_ids = Tensor::from_vector(ids, {1, time_ids});
  expect_identical(a.unet->forward(sample, t, ehs, in), b.unet->forward(sample, t, ehs, in),
                   "unet");
  // The added conditioning matters: other text_embeds give another output.
  UNet2DConditionInputs other = in;
  other.text_embeds = g.randn({1, kProjection});
  EXPECT_NE(b.unet->forward(sample, t, ehs, in).to_vector<float>(),
            b.unet->forward(sample, t, ehs, other).to_vector<float>());

  const Tensor image = g.randn({1, 3, 32, 32});
  expect_identical(a.vae->encode(image).mean, b.vae->encode(image).mean, "vae encode");
  const Tensor latents = g.randn({1, 4, 4, 4});
  expect_identical(a.vae->decode(latents), b.vae->decode(latents), "vae decode");

  const Tensor tokens =
      Tensor::from_vector(std::vector<int64_t>{0, 17, 250, 999, 3, 2, 1}, {1, 7}, DType::i64);
  ASSERT_EQ(a.text_encoder == nullptr, b.text_encoder == nullptr);
  if (a.text_encoder) {
    const auto oa = a.text_encoder->forward(tokens, true);
    const auto ob = b.text_encoder->forward(tokens, true);
    expect_identical(oa.last_hidden_state, ob.last_hidden_state, "text_encoder last_hidden_state");
    // SDXL conditions on the penultimate hidden states.
    expect_identical(oa.hidden_states.at(oa.hidden_states.size() - 2),
                     ob.hidden_states.at(ob.hidden_states.size() - 2),
                     "text_encoder hidden_states[-2]");
  }
  ASSERT_NE(b.text_encoder_2, nullptr);
  const auto oa = a.text_encoder_2->forward(tokens, true);
  const auto ob = b.text_encoder_2->forward(tokens, true);
  // Embeddings + every layer: SDXL's bigG keeps all of them.
  ASSERT_EQ(ob.hidden_states.size(), static_cast<std::size_t>(kBigGLayers + 1));
  expect_identical(oa.last_hidden_state, ob.last_hidden_state, "text_encoder_2 last_hidden_state");
  expect_identical(oa.hidden_states[kBigGLayers - 1], ob.hidden_states[kBigGLayers - 1],
                   "text_encoder_2 hidden_states[-2]");
  expect_identical(oa.text_embeds, ob.text_embeds, "text_encoder_2 text_embeds");
  EXPECT_EQ(ob.text_embeds.shape(), (Shape{1, kProjection}));
}

class SingleFileXlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::temp_dir("loaders_xl");
    threads_ = num_threads();
    set_num_threads(1);  // tiny models: one thread is fastest on a busy machine
  }
  void TearDown() override {
    set_num_threads(threads_);
    fs::remove_all(dir_);
  }

  // Random-weight diffusers folder of the small model.
  fs::path make_pipeline(Variant v, uint64_t seed = 1) {
    const std::string name = v == Variant::base      ? "base"
                             : v == Variant::refiner ? "refiner"
                                                     : "inpaint";
    const fs::path configs = dir_ / ("configs_" + name);
    write_xl_config_folder(configs, v);
    const fs::path out = dir_ / ("diffusers_" + name);
    RandomWeightsOptions o;
    o.seed = seed;
    o.std = 0.2;  // large enough that every layer visibly changes the outputs
    const auto files = write_random_weights(configs, out, o);
    EXPECT_EQ(files.size(), v == Variant::refiner ? 3u : 4u);
    return out;
  }
  fs::path dir_;
  int threads_ = 1;
};

TEST_F(SingleFileXlTest, BaseSafetensorsAndCkptMatchDiffusersFolder) {
  const fs::path folder = make_pipeline(Variant::base);
  const fs::path st = dir_ / "xl.safetensors";
  save_single_file(folder, st, LdmTextEncoderLayout::sdxl);
  const auto file = open_tensor_source(st);
  // The SGM layout: add_embedding is label_emb.0, the encoders are conditioner.embedders.
  EXPECT_EQ(file->info("model.diffusion_model.label_emb.0.0.weight").shape,
            (Shape{32 * 4, 6 * kTimeEmbedDim + kProjection}));
  EXPECT_TRUE(file->contains(
      "model.diffusion_model.input_blocks.7.1.transformer_blocks.2.attn2.to_k.weight"));
  EXPECT_TRUE(file->contains("model.diffusion_model.output_blocks.5.2.conv.weight"));
  EXPECT_TRUE(file->contains(
      "conditioner.embedders.0.transformer.text_model.encoder.layers.1.mlp.fc2.bias"));
  EXPECT_EQ(
      file->info("conditioner.embedders.1.model.transformer.resblocks.2.attn.in_proj_weight").shape,
      (Shape{3 * kBigGHidden, kBigGHidden}));
  // OpenCLIP multiplies by text_projection: [hidden, projection].
  EXPECT_EQ(file->info("conditioner.embedders.1.model.text_projection").shape,
            (Shape{kBigGHidden, kProjection}));
  EXPECT_EQ(infer_single_file_model_type(*file), SingleFileModelType::xl_base);
  EXPECT_EQ(infer_prediction_type(SingleFileModelType::xl_base, *file), "epsilon");

  const auto reference = load_diffusers_xl_models(folder);
  SingleFileOptions o;
  o.config = folder;
  const auto from_st = load_single_file_xl_models(st, o);
  expect_same_xl_models(reference, from_st);
  EXPECT_TRUE(from_st.force_zeros_for_empty_prompt);
  EXPECT_FALSE(from_st.requires_aesthetics_score);
  ASSERT_NE(from_st.scheduler, nullptr);
  EXPECT_EQ(from_st.scheduler->class_name(), "EulerDiscreteScheduler");
  EXPECT_EQ(from_st.tokenizer, nullptr);

  const fs::path ckpt = dir_ / "xl.ckpt";
  write_ckpt(ckpt, diffusers_to_ldm(folder, LdmTextEncoderLayout::sdxl), 10000);
  expect_same_xl_models(reference, load_single_file_xl_models(ckpt, o));

  // The bigG q/k/v are views of the fused in_proj in the memory-mapped file.
  const auto te2 = open_clip_source(file, CLIPTextConfig::from_json(small_big_g()),
                                    "conditioner.embedders.1.model.");
  const Tensor fused =
      file->get("conditioner.embedders.1.model.transformer.resblocks.1.attn.in_proj_weight");
  const Tensor v = te2->get("text_model.encoder.layers.1.self_attn.v_proj.weight");
  EXPECT_EQ(static_cast<const char*>(v.data_ptr()),
            static_cast<const char*>(fused.data_ptr()) + 2 * kBigGHidden * kBigGHidden * 4);
}

TEST_F(SingleFileXlTest, RefinerMatchesDiffusersFolder) {
  const fs::path folder = make_pipeline(Variant::refiner);
  const fs::path st = dir_ / "refiner.safetensors";
  save_single_file(folder, st, LdmTextEncoderLayout::sdxl_refiner);
  const auto file = open_tensor_source(st);
  EXPECT_TRUE(file->contains("conditioner.embedders.0.model.text_projection"));
  EXPECT_FALSE(file->contains("conditioner.embedders.1.model.text_projection"));
  EXPECT_EQ(file->info("model.diffusion_model.label_emb.0.0.weight").shape,
            (Shape{32 * 4, 5 * kTimeEmbedDim + kProjection}));
  EXPECT_EQ(infer_single_file_model_type(*file), SingleFileModelType::xl_refiner);

  const auto reference = load_diffusers_xl_models(folder);
  SingleFileOptions o;
  o.config = folder;
  const auto c = load_single_file_xl_models(st, o);
  EXPECT_EQ(c.text_encoder, nullptr);
  expect_same_xl_models(reference, c);
  EXPECT_FALSE(c.force_zeros_for_empty_prompt);
  EXPECT_TRUE(c.requires_aesthetics_score);

  // A config folder that names the refiner's only encoder text_encoder/ (like the refiner
  // config assets), without flags in its model_index.json: the refiner defaults apply.
  const fs::path alt = dir_ / "refiner_alt";
  fs::create_directories(alt);
  for (const char* sub : {"unet", "vae", "scheduler"})
    fs::copy(folder / sub, alt / sub, fs::copy_options::recursive);
  fs::copy(folder / "text_encoder_2", alt / "text_encoder", fs::copy_options::recursive);
  write_json(alt / "model_index.json", {{"_class_name", "StableDiffusionXLImg2ImgPipeline"}});
  o.config = alt;
  const auto d = load_single_file_xl_models(st, o);
  expect_same_xl_models(reference, d);
  EXPECT_FALSE(d.force_zeros_for_empty_prompt);
  EXPECT_TRUE(d.requires_aesthetics_score);
}

TEST_F(SingleFileXlTest, InpaintingIsDetectedAndLoads) {
  const fs::path folder = make_pipeline(Variant::inpaint);
  const fs::path st = dir_ / "inpaint.safetensors";
  save_single_file(folder, st, LdmTextEncoderLayout::sdxl);
  const auto file = open_tensor_source(st);
  EXPECT_EQ(infer_single_file_model_type(*file), SingleFileModelType::xl_inpaint);
  SingleFileOptions o;
  o.config = folder;
  o.prediction_type = "v_prediction";
  const auto c = load_single_file_xl_models(st, o);
  expect_same_xl_models(load_diffusers_xl_models(folder), c);
  EXPECT_EQ(c.unet->config().in_channels, 9);
  EXPECT_EQ(c.scheduler->config()["prediction_type"], "v_prediction");
}

TEST_F(SingleFileXlTest, FromSingleFileXlReadsBothTokenizers) {
  const fs::path vocab = fs::path(testing::shared_dir()) / "assets" / "clip-tokenizer";
  if (!fs::exists(vocab / "vocab.json")) GTEST_SKIP() << "no CLIP tokenizer at " << vocab;
  const fs::path folder = make_pipeline(Variant::base);
  // tokenizer: CLIP's (pad <|endoftext|>); tokenizer_2: OpenCLIP's (pad "!").
  for (const char* f :
       {"vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"}) {
    fs::create_directories(folder / "tokenizer");
    fs::create_directories(folder / "tokenizer_2");
    if (fs::exists(vocab / f))
      fs::copy_file(vocab / f, folder / "tokenizer" / f, fs::copy_options::overwrite_existing);
    const fs::path sd2 = vocab / "sd2" / f;
    fs::copy_file(fs::exists(sd2) ? sd2 : vocab / f, folder / "tokenizer_2" / f,
                  fs::copy_options::overwrite_existing);
  }
  const fs::path st = dir_ / "xl.safetensors";
  save_single_file(folder, st, LdmTextEncoderLayout::sdxl);
  SingleFileOptions o;
  o.config = folder;
  const auto c = from_single_file_xl(st, o);
  ASSERT_NE(c.tokenizer, nullptr);
  ASSERT_NE(c.tokenizer_2, nullptr);
  EXPECT_EQ(c.tokenizer->pad_id(), 49407);  // <|endoftext|>
  EXPECT_EQ(c.tokenizer_2->pad_id(), 0);    // "!"
  expect_same_xl_models(load_diffusers_xl_models(folder), c);

  // Explicit folders win over the config folder's.
  SingleFileOptions e;
  e.config = folder;
  e.tokenizer = folder / "tokenizer_2";
  e.tokenizer_2 = folder / "tokenizer";
  const auto swapped = from_single_file_xl(st, e);
  EXPECT_EQ(swapped.tokenizer->pad_id(), 0);
  EXPECT_EQ(swapped.tokenizer_2->pad_id(), 49407);

  // Without any folder: the error says which tokenizer to pass.
  expect_error([&] { from_single_file_xl(st, SingleFileOptions{}); }, {"tokenizer", "vocab.json"});
  SingleFileOptions only_first;
  only_first.tokenizer = folder / "tokenizer";
  expect_error([&] { from_single_file_xl(st, only_first); }, {"tokenizer_2", "\"!\""});
}

TEST_F(SingleFileXlTest, MalformedXlFilesNameTheTensor) {
  const fs::path folder = make_pipeline(Variant::base);
  SingleFileOptions o;
  o.config = folder;
  const auto tensors = diffusers_to_ldm(folder, LdmTextEncoderLayout::sdxl);
  const auto write_changed = [&](const std::string& key, const fs::path& path,
                                 std::optional<Tensor> replacement = std::nullopt) {
    std::vector<std::pair<std::string, Tensor>> kept;
    bool found = false;
    for (const auto& [n, t] : tensors) {
      if (n != key) {
        kept.emplace_back(n, t);
        continue;
      }
      found = true;
      if (replacement) kept.emplace_back(n, *replacement);
    }
    EXPECT_TRUE(found) << key;
    save_safetensors(path, kept);
  };
  const std::string label = "model.diffusion_model.label_emb.0.2.weight";
  write_changed(label, dir_ / "label.safetensors");
  expect_error([&] { load_single_file_xl_models(dir_ / "label.safetensors", o); },
               {"missing tensor", label, "add_embedding.linear_2.weight"});

  const std::string in_proj =
      "conditioner.embedders.1.model.transformer.resblocks.2.attn.in_proj_weight";
  write_changed(in_proj, dir_ / "in_proj.safetensors");
  expect_error([&] { load_single_file_xl_models(dir_ / "in_proj.safetensors", o); },
               {"missing tensor", in_proj, "text_encoder_2"});

  // text_projection stored as a Linear weight ([proj, hidden]) instead of OpenCLIP's matrix.
  const std::string proj = "conditioner.embedders.1.model.text_projection";
  write_changed(proj, dir_ / "proj.safetensors", Tensor::zeros({kProjection, kBigGHidden}));
  expect_error([&] { load_single_file_xl_models(dir_ / "proj.safetensors", o); },
               {proj, "[48, 24]", "[24, 48]"});

  const std::string ln = "conditioner.embedders.0.transformer.text_model.final_layer_norm.bias";
  write_changed(ln, dir_ / "clip.safetensors");
  expect_error([&] { load_single_file_xl_models(dir_ / "clip.safetensors", o); },
               {ln, "text_encoder"});

  // No CLIP ViT-L at all (a bigG-only base file).
  std::vector<std::pair<std::string, Tensor>> no_clip;
  for (const auto& [n, t] : tensors)
    if (n.rfind("conditioner.embedders.0.", 0) != 0) no_clip.emplace_back(n, t);
  save_safetensors(dir_ / "no_clip.safetensors", no_clip);
  expect_error([&] { load_single_file_xl_models(dir_ / "no_clip.safetensors", o); },
               {"conditioner.embedders.0.transformer.", "no CLIP ViT-L"});

  // A text_encoder_2 config without projection cannot give text_embeds.
  const fs::path bad = dir_ / "bad_config";
  fs::copy(folder, bad, fs::copy_options::recursive);
  write_json(bad / "text_encoder_2" / "config.json", small_big_g(false));
  SingleFileOptions b;
  b.config = bad;
  expect_error([&] { load_single_file_xl_models(dir_ / "label.safetensors", b); },
               {"CLIPTextModelWithProjection", "text_encoder_2"});

  // SD 1.x files are sent to the SD loader.
  save_safetensors(
      dir_ / "sd1.safetensors",
      {{"model.diffusion_model.input_blocks.0.0.weight", Tensor::zeros({8, 4, 3, 3})},
       {"cond_stage_model.transformer.text_model.final_layer_norm.weight", Tensor::zeros({8})}});
  expect_error([&] { load_single_file_xl_models(dir_ / "sd1.safetensors"); },
               {"not an SDXL single file", "Stable Diffusion 1.x (v1)", "load_single_file_models"});
  // Not a Stable Diffusion file at all.
  save_safetensors(dir_ / "other.safetensors", {{"weight", Tensor::zeros({2})}});
  expect_error([&] { load_single_file_xl_models(dir_ / "other.safetensors"); },
               {"not an original Stable Diffusion checkpoint"});
}

// --- detection, built-in configs, key maps at full size -------------------------------------

std::shared_ptr<MemoryTensorSource> keys(
    const std::vector<std::pair<std::string, Shape>>& entries) {
  auto s = std::make_shared<MemoryTensorSource>("keys");
  for (const auto& [n, shape] : entries)
    s->insert(n, Tensor::zeros(Shape(shape.size(), 1)).expand(shape));  // no memory
  return s;
}

TEST(SingleFileXlDetection, TypesNamesAndPredictionTypes) {
  const std::string conv_in = "model.diffusion_model.input_blocks.0.0.weight";
  const std::string base = "conditioner.embedders.1.model.transformer.resblocks.9.mlp.c_proj.bias";
  const std::string refiner =
      "conditioner.embedders.0.model.transformer.resblocks.9.mlp.c_proj.bias";
  using T = SingleFileModelType;
  const auto b = keys({{conv_in, {320, 4, 3, 3}}, {base, {1280}}});
  const auto r = keys({{conv_in, {384, 4, 3, 3}}, {refiner, {1280}}});
  const auto i = keys({{conv_in, {320, 9, 3, 3}}, {base, {1280}}});
  EXPECT_EQ(infer_single_file_model_type(*b), T::xl_base);
  EXPECT_EQ(infer_single_file_model_type(*r), T::xl_refiner);
  EXPECT_EQ(infer_single_file_model_type(*i), T::xl_inpaint);
  // A 9-channel refiner-keyed file is not an SDXL inpainting model (diffusers: SD inpainting).
  EXPECT_EQ(infer_single_file_model_type(*keys({{conv_in, {384, 9, 3, 3}}, {refiner, {1280}}})),
            T::inpainting);
  for (const T t : {T::xl_base, T::xl_refiner, T::xl_inpaint}) {
    EXPECT_TRUE(is_sdxl(t));
    EXPECT_EQ(infer_prediction_type(t, *b), "epsilon");
  }
  for (const T t : {T::v1, T::v2, T::inpainting, T::inpainting_v2}) EXPECT_FALSE(is_sdxl(t));
  EXPECT_EQ(single_file_model_type_description(T::xl_refiner), "SDXL refiner");
  EXPECT_EQ(single_file_model_type_description(T::v2), "Stable Diffusion 2.x");
}

TEST(SingleFileXlDetection, BuiltInConfigsAreTheHubConfigs) {
  using T = SingleFileModelType;
  const auto base = default_single_file_configs(T::xl_base);
  const auto refiner = default_single_file_configs(T::xl_refiner);
  const auto inpaint = default_single_file_configs(T::xl_inpaint);
  EXPECT_EQ(base.unet["cross_attention_dim"], 2048);
  EXPECT_EQ(base.unet["projection_class_embeddings_input_dim"], 2816);     // 6 * 256 + 1280
  EXPECT_EQ(refiner.unet["projection_class_embeddings_input_dim"], 2560);  // 5 * 256 + 1280
  EXPECT_EQ(inpaint.unet["in_channels"], 9);
  EXPECT_EQ(base.text_encoder_2["num_hidden_layers"], 32);
  EXPECT_TRUE(refiner.text_encoder.is_null());
  EXPECT_EQ(base.scheduler["_class_name"], "EulerDiscreteScheduler");
  EXPECT_TRUE(base.force_zeros_for_empty_prompt);
  EXPECT_FALSE(base.requires_aesthetics_score);
  EXPECT_FALSE(refiner.force_zeros_for_empty_prompt);
  EXPECT_TRUE(refiner.requires_aesthetics_score);
  EXPECT_TRUE(inpaint.force_zeros_for_empty_prompt);
  EXPECT_FALSE(inpaint.requires_aesthetics_score);
  EXPECT_TRUE(default_single_file_configs(T::v1).text_encoder_2.is_null());
  EXPECT_EQ(default_single_file_configs(T::xl_base, "v_prediction").scheduler["prediction_type"],
            "v_prediction");

  const fs::path assets = fs::path(testing::shared_dir()) / "assets" / "model-configs";
  if (!fs::exists(assets)) GTEST_SKIP() << "no model configs at " << assets;
  auto hub = [&](const std::string& p) {
    json j = read_json_file(assets / p);
    j.erase("_diffusers_version");
    j.erase("_name_or_path");
    return j;
  };
  const std::string b = "stabilityai/stable-diffusion-xl-base-1.0/";
  const std::string r = "stabilityai/stable-diffusion-xl-refiner-1.0/";
  const std::string i = "diffusers/stable-diffusion-xl-1.0-inpainting-0.1/";
  EXPECT_EQ(base.unet, hub(b + "unet/config.json"));
  EXPECT_EQ(base.vae, hub(b + "vae/config.json"));
  EXPECT_EQ(base.text_encoder, hub(b + "text_encoder/config.json"));
  EXPECT_EQ(base.text_encoder_2, hub(b + "text_encoder_2/config.json"));
  EXPECT_EQ(base.scheduler, hub(b + "scheduler/scheduler_config.json"));
  EXPECT_EQ(refiner.unet, hub(r + "unet/config.json"));
  EXPECT_EQ(refiner.vae, hub(r + "vae/config.json"));
  EXPECT_EQ(refiner.text_encoder_2, hub(r + "text_encoder/config.json"));
  EXPECT_EQ(refiner.scheduler, hub(r + "scheduler/scheduler_config.json"));
  EXPECT_EQ(inpaint.unet, hub(i + "unet/config.json"));
  EXPECT_EQ(inpaint.vae, hub(i + "vae/config.json"));
  EXPECT_EQ(inpaint.text_encoder, hub(i + "text_encoder/config.json"));
  EXPECT_EQ(inpaint.text_encoder_2, hub(i + "text_encoder_2/config.json"));
  EXPECT_EQ(inpaint.scheduler, hub(i + "scheduler/scheduler_config.json"));
  EXPECT_EQ(hub(b + "model_index.json")["force_zeros_for_empty_prompt"],
            base.force_zeros_for_empty_prompt);
  EXPECT_EQ(hub(r + "model_index.json")["requires_aesthetics_score"],
            refiner.requires_aesthetics_score);
}

TEST(SingleFileXlKeyMaps, FullSizeSdxlMapsEveryTensor) {
  using T = SingleFileModelType;
  const auto base = default_single_file_configs(T::xl_base);
  const auto unet = model_weight_specs(base.unet);
  const auto te = model_weight_specs(base.text_encoder);
  const auto te2 = model_weight_specs(base.text_encoder_2);
  // Published parameter counts of SDXL base 1.0's components.
  EXPECT_EQ(count_params(unet), 2567463684);
  EXPECT_EQ(unet.size(), 1680u);  // tensors of the diffusers checkpoint
  EXPECT_EQ(count_params(te), 123060480);
  EXPECT_EQ(count_params(te2), 694659840);
  EXPECT_EQ(count_params(model_weight_specs(base.vae)), 83653863);

  // Every UNet tensor has one LDM name and maps back, for the base and the refiner.
  for (const T t : {T::xl_base, T::xl_refiner}) {
    const auto cfg = default_single_file_configs(t);
    const auto map = loaders::unet_key_map(UNet2DConditionConfig::from_json(cfg.unet));
    std::set<std::string> ldm;
    for (const auto& s : model_weight_specs(cfg.unet)) {
      const auto l = map.to_ldm(s.name, nullptr);
      ASSERT_TRUE(l.has_value()) << s.name;
      EXPECT_TRUE(ldm.insert(*l).second) << "two tensors map to " << *l;
      EXPECT_EQ(map.to_diffusers(*l, nullptr), s.name);
    }
  }
  const auto map = loaders::unet_key_map(UNet2DConditionConfig::from_json(base.unet));
  EXPECT_EQ(map.to_ldm("add_embedding.linear_2.bias", nullptr), "label_emb.0.2.bias");
  EXPECT_EQ(map.to_ldm("down_blocks.2.attentions.1.transformer_blocks.9.ff.net.2.weight", nullptr),
            "input_blocks.8.1.transformer_blocks.9.ff.net.2.weight");
  EXPECT_EQ(map.to_ldm("up_blocks.0.attentions.2.transformer_blocks.9.norm3.bias", nullptr),
            "output_blocks.2.1.transformer_blocks.9.norm3.bias");
  EXPECT_EQ(map.to_ldm("up_blocks.1.upsamplers.0.conv.weight", nullptr),
            "output_blocks.5.2.conv.weight");
  EXPECT_EQ(map.to_ldm("up_blocks.2.resnets.2.conv_shortcut.weight", nullptr),
            "output_blocks.8.0.skip_connection.weight");

  // The full bigG tower in the OpenCLIP layout: all 32 resblocks map (none is dropped as in
  // SD 2.x), and the result is exactly what CLIPTextModelWithProjection loads.
  const int64_t h = 1280;
  std::vector<std::pair<std::string, Shape>> open_clip = {{"token_embedding.weight", {49408, h}},
                                                          {"positional_embedding", {77, h}},
                                                          {"ln_final.weight", {h}},
                                                          {"ln_final.bias", {h}},
                                                          {"text_projection", {h, h}},
                                                          {"logit_scale", {}}};
  for (int l = 0; l < 32; ++l) {
    const std::string p = "transformer.resblocks." + std::to_string(l) + ".";
    for (const auto& [n, s] :
         std::vector<std::pair<std::string, Shape>>{{"ln_1.weight", {h}},
                                                    {"ln_1.bias", {h}},
                                                    {"attn.in_proj_weight", {3 * h, h}},
                                                    {"attn.in_proj_bias", {3 * h}},
                                                    {"attn.out_proj.weight", {h, h}},
                                                    {"attn.out_proj.bias", {h}},
                                                    {"ln_2.weight", {h}},
                                                    {"ln_2.bias", {h}},
                                                    {"mlp.c_fc.weight", {4 * h, h}},
                                                    {"mlp.c_fc.bias", {4 * h}},
                                                    {"mlp.c_proj.weight", {h, 4 * h}},
                                                    {"mlp.c_proj.bias", {h}}})
      open_clip.emplace_back(p + n, s);
  }
  for (auto& [n, s] : open_clip) n = "conditioner.embedders.1.model." + n;
  const auto ckpt = keys(open_clip);
  const auto mapped = open_clip_source(ckpt, CLIPTextConfig::from_json(base.text_encoder_2),
                                       "conditioner.embedders.1.model.");
  std::set<std::string> expected;
  for (const auto& s : te2) {
    expected.insert(s.name);
    const TensorInfo* i = mapped->find(s.name);
    ASSERT_NE(i, nullptr) << s.name;
    EXPECT_EQ(i->shape, s.shape) << s.name;
  }
  std::set<std::string> got;
  for (const TensorInfo& i : mapped->tensors()) got.insert(i.name);
  EXPECT_EQ(got, expected);
  EXPECT_TRUE(mapped->contains("text_model.encoder.layers.31.self_attn.q_proj.weight"));
  // The same tower under the SD 2.x prefix and a 31-layer config drops the last resblock.
  const std::string xl_prefix = "conditioner.embedders.1.model.";
  std::vector<std::pair<std::string, Shape>> sd2;
  for (const auto& [n, s] : open_clip)
    sd2.emplace_back("cond_stage_model.model." + n.substr(xl_prefix.size()), s);
  json shallow = base.text_encoder_2;
  shallow["num_hidden_layers"] = 31;
  const auto sd2_mapped = open_clip_source(keys(sd2), CLIPTextConfig::from_json(shallow));
  EXPECT_FALSE(sd2_mapped->contains("text_model.encoder.layers.31.self_attn.q_proj.weight"));
  EXPECT_TRUE(sd2_mapped->contains("text_model.encoder.layers.30.self_attn.q_proj.weight"));
}

// --- inspection ---------------------------------------------------------------------------------

TEST_F(SingleFileXlTest, SummaryCountsComponentsByPrefix) {
  const fs::path folder = make_pipeline(Variant::base);
  auto tensors = diffusers_to_ldm(folder, LdmTextEncoderLayout::sdxl);
  tensors.emplace_back("alphas_cumprod", Tensor::zeros({1000}));  // a DDPM buffer of SGM files
  const fs::path st = dir_ / "xl.safetensors";
  save_safetensors(st, tensors);
  const auto summary = summarize_single_file(*open_tensor_source(st));
  ASSERT_TRUE(summary.has_value());
  EXPECT_EQ(summary->type, SingleFileModelType::xl_base);
  EXPECT_EQ(summary->prediction_type, "epsilon");
  const std::vector<std::pair<std::string, std::string>> expected = {
      {"unet", "unet"},
      {"vae", "vae"},
      {"text_encoder", "text_encoder"},
      {"text_encoder_2", "text_encoder_2"}};
  ASSERT_EQ(summary->components.size(), 5u);
  for (std::size_t k = 0; k < expected.size(); ++k) {
    const auto& c = summary->components[k];
    EXPECT_EQ(c.component, expected[k].first);
    // The single file holds exactly the parameters of the diffusers component (in_proj fused,
    // text_projection transposed: same counts).
    const auto src = open_tensor_source(folder / expected[k].second);
    int64_t params = 0;
    for (const TensorInfo& i : src->tensors()) {
      int64_t n = 1;
      for (const int64_t d : i.shape) n *= d;
      params += n;
    }
    EXPECT_EQ(c.parameters, params) << c.component;
    EXPECT_EQ(c.parameters_per_type.size(), 1u);
    EXPECT_EQ(c.parameters_per_type.begin()->first, "F32");
  }
  EXPECT_EQ(summary->components[1].prefix, "first_stage_model.");
  EXPECT_EQ(summary->components[3].prefix, "conditioner.embedders.1.");
  EXPECT_EQ(summary->components[4].component, "other");
  EXPECT_EQ(summary->components[4].tensors, 1);
  EXPECT_EQ(summary->components[4].parameters, 1000);

  EXPECT_FALSE(summarize_single_file(*keys({{"weight", {2}}})).has_value());
  const auto refiner = summarize_single_file(
      *keys({{"model.diffusion_model.input_blocks.0.0.weight", {384, 4, 3, 3}},
             {"conditioner.embedders.0.model.transformer.resblocks.9.mlp.c_proj.bias", {1280}}}));
  ASSERT_TRUE(refiner.has_value());
  ASSERT_EQ(refiner->components.size(), 2u);
  EXPECT_EQ(refiner->components[1].component, "text_encoder_2");
}

#ifdef DIFFUSE_CLI
std::string run_cli(const std::string& args, int* rc) {
  const std::string cmd = std::string(DIFFUSE_CLI) + " " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) {
    *rc = -1;
    return {};
  }
  std::string out;
  char buf[4096];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  *rc = pclose(p);
  return out;
}

// `diffuse generate` with an SDXL single file (its configs from --config) and a refiner folder
// for the last half of the schedule: the PNG carries the A1111 parameters of both.
TEST_F(SingleFileXlTest, CliGeneratesWithSingleFileAndRefiner) {
  const fs::path vocab = fs::path(testing::shared_dir()) / "assets" / "clip-tokenizer";
  if (!fs::exists(vocab / "vocab.json")) GTEST_SKIP() << "no CLIP tokenizer at " << vocab;
  const fs::path base = make_pipeline(Variant::base);
  const fs::path refiner = make_pipeline(Variant::refiner);
  for (const fs::path& folder : {base, refiner})
    for (const char* sub : {"tokenizer", "tokenizer_2"})
      for (const char* f : {"vocab.json", "merges.txt"}) {
        fs::create_directories(folder / sub);
        fs::copy_file(vocab / f, folder / sub / f, fs::copy_options::overwrite_existing);
      }
  const fs::path st = dir_ / "base.safetensors";
  save_single_file(base, st, LdmTextEncoderLayout::sdxl);
  const fs::path png = dir_ / "out.png";
  int rc = 0;
  const std::string out =
      run_cli("generate -m " + st.string() + " --config " + base.string() + " --refiner " +
                  refiner.string() + " --refiner-switch 0.5 -p \"a (red:1.2) cat\" --steps 4 " +
                  "--seed 5 -W 64 -H 64 -o " + png.string(),
              &rc);
  ASSERT_EQ(rc, 0) << out;
  const auto text = read_png_text(png);
  ASSERT_EQ(text.size(), 1u);
  EXPECT_NE(text[0].second.find("Refiner: diffusers_refiner, Refiner switch at: 0.5"),
            std::string::npos)
      << text[0].second;
  EXPECT_EQ(load_image(png).shape(), (Shape{1, 64, 64, 3}));
}

TEST_F(SingleFileXlTest, CliInfoPrintsTheArchitecture) {
  const fs::path folder = make_pipeline(Variant::refiner);
  const fs::path st = dir_ / "refiner.safetensors";
  save_single_file(folder, st, LdmTextEncoderLayout::sdxl_refiner);
  int rc = 0;
  std::string out = run_cli("info " + st.string(), &rc);
  ASSERT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("SDXL refiner (diffusers model type xl_refiner)"), std::string::npos) << out;
  EXPECT_NE(out.find("prediction type: epsilon"), std::string::npos) << out;
  EXPECT_NE(out.find("from_single_file_xl"), std::string::npos) << out;
  EXPECT_NE(out.find("text_encoder_2"), std::string::npos) << out;
  EXPECT_NE(out.find("conditioner.embedders.0.*"), std::string::npos) << out;
  EXPECT_NE(out.find("format:"), std::string::npos) << out;  // the generic part stays

  out = run_cli("info " + folder.string(), &rc);
  ASSERT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("diffusers pipeline StableDiffusionXLImg2ImgPipeline"), std::string::npos)
      << out;
  EXPECT_NE(out.find("components: scheduler, text_encoder_2, tokenizer_2, unet, vae"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("absent:     text_encoder, tokenizer"), std::string::npos) << out;

  // Other files print what they always did, without an architecture.
  save_safetensors(dir_ / "plain.safetensors", {{"weight", Tensor::zeros({2})}});
  out = run_cli("info " + (dir_ / "plain.safetensors").string(), &rc);
  ASSERT_EQ(rc, 0) << out;
  EXPECT_EQ(out.find("architecture"), std::string::npos) << out;
  EXPECT_NE(out.find("parameters: 2"), std::string::npos) << out;
}
#endif

}  // namespace
}  // namespace diffuse
