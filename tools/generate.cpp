// `diffuse generate`: text-to-image, image-to-image and inpainting with a Stable Diffusion model,
// a progress bar on stderr, PNG output with A1111-style "parameters" and a JSON recipe.
#include <chrono>
#include <cstdio>
#include <fstream>
#include <random>
#include <sstream>
#include <type_traits>

#include "commands.h"
#include "diffuse/diffuse.h"
#include "diffuse/formats/image.h"
#include "diffuse/loaders/single_file.h"
#include "diffuse/pipelines/stable_diffusion.h"
#include "diffuse/pipelines/stable_diffusion_xl.h"
#include "diffuse/schedulers/sampler_names.h"

namespace diffuse::cli {

namespace {

struct GenerateOptions {
  std::string model;
  std::string tokenizer;        // single-file checkpoints: the CLIP tokenizer folder
  std::string tokenizer_2;      // SDXL single files: text_encoder_2's tokenizer folder
  std::string config;           // single files: a diffusers folder with the configs to use
  std::string refiner;          // SDXL: a refiner model for the last part of the schedule
  double refiner_switch = 0.8;  // fraction of the schedule the base model runs
  std::string prompt;
  std::string negative;
  int64_t steps = 20;
  double cfg = 7.5;
  std::string sampler;   // A1111/ComfyUI name; empty: the model's own scheduler
  std::string schedule;  // karras, exponential, ...
  int64_t width = 0;     // 0: the model's default size
  int64_t height = 0;
  int64_t seed = -1;  // -1: random
  int64_t batch = 1;
  std::string init_image;
  double strength = -1;  // -1: diffusers' defaults (SD 0.8 / 1.0, SDXL 0.3 / 0.9999)
  std::string mask;
  int64_t clip_skip = 0;         // A1111 numbering: 1 = last layer (off), 2 = penultimate
  bool prompt_weighting = true;  // A1111 syntax on by default: the CLI speaks A1111's dialect
  double guidance_rescale = 0.0;
  double eta = 0.0;
  int threads = 0;
  std::string weight_dtype = "f32";
  std::string compute_dtype = "f32";
  std::string output = "output.png";
  std::string recipe;
};

std::string output_path(const std::string& base, int64_t index, int64_t count) {
  if (count == 1) return base;
  const auto dot = base.rfind('.');
  const std::string stem = dot == std::string::npos ? base : base.substr(0, dot);
  const std::string ext = dot == std::string::npos ? ".png" : base.substr(dot);
  return stem + "-" + std::to_string(index) + ext;
}

// A1111's infotext, so that other tools (A1111's PNG Info, ComfyUI loaders, civitai) read the
// parameters back.
std::string infotext(const GenerateOptions& o, uint64_t seed, int64_t width, int64_t height,
                     const std::string& sampler) {
  std::ostringstream s;
  s << o.prompt;
  if (!o.negative.empty()) s << "\nNegative prompt: " << o.negative;
  s << "\nSteps: " << o.steps << ", Sampler: " << sampler;
  if (!o.schedule.empty()) s << ", Schedule type: " << o.schedule;
  s << ", CFG scale: " << o.cfg << ", Seed: " << seed << ", Size: " << width << "x" << height
    << ", Model: " << std::filesystem::path(o.model).filename().string();
  if (!o.init_image.empty()) s << ", Denoising strength: " << o.strength;
  if (o.clip_skip > 1) s << ", Clip skip: " << o.clip_skip;
  if (o.guidance_rescale > 0) s << ", CFG Rescale phi: " << o.guidance_rescale;
  if (!o.refiner.empty())
    s << ", Refiner: " << std::filesystem::path(o.refiner).filename().string()
      << ", Refiner switch at: " << o.refiner_switch;
  s << ", Version: diffuse 0.1.0";
  return s.str();
}

nlohmann::json recipe_json(const GenerateOptions& o, uint64_t seed, int64_t width, int64_t height) {
  return {{"diffuse_version", "0.1.0"},
          {"model", o.model},
          {"config", o.config},
          {"tokenizer", o.tokenizer},
          {"tokenizer_2", o.tokenizer_2},
          {"refiner", o.refiner},
          {"refiner_switch", o.refiner_switch},
          {"prompt", o.prompt},
          {"negative_prompt", o.negative},
          {"steps", o.steps},
          {"cfg", o.cfg},
          {"sampler", o.sampler},
          {"schedule", o.schedule},
          {"width", width},
          {"height", height},
          {"seed", seed},
          {"batch", o.batch},
          {"init_image", o.init_image},
          {"strength", o.strength},
          {"mask", o.mask},
          {"clip_skip", o.clip_skip},
          {"guidance_rescale", o.guidance_rescale},
          {"eta", o.eta},
          {"weight_dtype", o.weight_dtype},
          {"compute_dtype", o.compute_dtype}};
}

void apply_recipe(GenerateOptions& o, const std::string& path) {
  const nlohmann::json r = read_json_file(path);
  ConfigReader c(r, "recipe " + path);
  c.get("model", o.model).get("prompt", o.prompt).get("negative_prompt", o.negative);
  c.get("config", o.config).get("tokenizer", o.tokenizer).get("tokenizer_2", o.tokenizer_2);
  c.get("refiner", o.refiner).get("refiner_switch", o.refiner_switch);
  c.get("steps", o.steps).get("cfg", o.cfg).get("sampler", o.sampler).get("schedule", o.schedule);
  c.get("width", o.width).get("height", o.height).get("seed", o.seed).get("batch", o.batch);
  c.get("init_image", o.init_image).get("strength", o.strength).get("mask", o.mask);
  c.get("clip_skip", o.clip_skip).get("guidance_rescale", o.guidance_rescale).get("eta", o.eta);
  c.get("weight_dtype", o.weight_dtype).get("compute_dtype", o.compute_dtype);
  c.ignore({"diffuse_version"});
  c.finish();
}

// "step 3/20 [======      ] 0.84 s/step, ETA 14 s" on stderr, rewritten in place.
class ProgressBar {
 public:
  bool operator()(const StepInfo& info) {
    const auto now = std::chrono::steady_clock::now();
    const double elapsed = std::chrono::duration<double>(now - start_).count();
    const double per_step = elapsed / static_cast<double>(info.step + 1);
    const int width = 24;
    const auto filled = static_cast<int>(width * (info.step + 1) / info.num_steps);
    std::fprintf(stderr, "\rstep %lld/%lld [%s%s] %.2f s/step, ETA %.0f s   ",
                 static_cast<long long>(info.step + 1), static_cast<long long>(info.num_steps),
                 std::string(static_cast<std::size_t>(filled), '=').c_str(),
                 std::string(static_cast<std::size_t>(width - filled), ' ').c_str(), per_step,
                 per_step * static_cast<double>(info.num_steps - info.step - 1));
    if (info.step + 1 == info.num_steps) std::fprintf(stderr, "\n");
    std::fflush(stderr);
    return true;
  }
  void restart() { start_ = std::chrono::steady_clock::now(); }

 private:
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

// The parameter and pipeline types of a model family.
template <class Components>
struct Family;
template <>
struct Family<StableDiffusionComponents> {
  using Text = StableDiffusionParams;
  using Img2Img = Img2ImgParams;
  using Inpaint = InpaintParams;
  using TextPipeline = StableDiffusionPipeline;
  using Img2ImgPipeline = StableDiffusionImg2ImgPipeline;
  using InpaintPipeline = StableDiffusionInpaintPipeline;
  static constexpr double img2img_strength = 0.8;
  static constexpr double inpaint_strength = 1.0;
  static constexpr int64_t default_sample_size = 64;
};
template <>
struct Family<StableDiffusionXLComponents> {
  using Text = StableDiffusionXLParams;
  using Img2Img = StableDiffusionXLImg2ImgParams;
  using Inpaint = StableDiffusionXLInpaintParams;
  using TextPipeline = StableDiffusionXLPipeline;
  using Img2ImgPipeline = StableDiffusionXLImg2ImgPipeline;
  using InpaintPipeline = StableDiffusionXLInpaintPipeline;
  static constexpr double img2img_strength = 0.3;
  static constexpr double inpaint_strength = 0.9999;
  static constexpr int64_t default_sample_size = 128;
};

// Is `model` an SDXL model: a diffusers folder whose model_index.json names an SDXL pipeline
// or a text_encoder_2, or a single file detected as SDXL base / refiner / inpainting.
bool is_sdxl(const std::filesystem::path& model) {
  if (std::filesystem::is_directory(model)) {
    const auto index = read_json_file(model / "model_index.json");
    const std::string cls = index.value("_class_name", "");
    return cls.find("StableDiffusionXL") != std::string::npos || index.contains("text_encoder_2");
  }
  const auto type = infer_single_file_model_type(*open_tensor_source(model));
  return type == SingleFileModelType::xl_base || type == SingleFileModelType::xl_refiner ||
         type == SingleFileModelType::xl_inpaint;
}

template <class Components>
Components load_model(const std::string& model, const GenerateOptions& o, const ModelOptions& mo) {
  const auto t0 = std::chrono::steady_clock::now();
  Components c;
  if constexpr (std::is_same_v<Components, StableDiffusionXLComponents>) {
    if (std::filesystem::is_directory(model)) {
      c = StableDiffusionXLComponents::from_pretrained(model, mo);
    } else {
      SingleFileOptions so;
      so.model = mo;
      if (model == o.model) so.config = o.config;
      so.tokenizer = o.tokenizer;
      so.tokenizer_2 = o.tokenizer_2;
      if (so.tokenizer_2.empty() && !o.tokenizer.empty()) {
        std::fprintf(stderr,
                     "note: no --tokenizer-2: text_encoder_2 uses --tokenizer too (SDXL's "
                     "tokenizer_2 pads with \"!\", so results differ slightly from diffusers)\n");
        so.tokenizer_2 = o.tokenizer;
      }
      c = from_single_file_xl(model, so);
    }
  } else {
    if (std::filesystem::is_directory(model)) {
      c = StableDiffusionComponents::from_pretrained(model, mo);
    } else {
      SingleFileOptions so;
      so.model = mo;
      so.config = o.config;
      so.tokenizer = o.tokenizer;
      c = from_single_file(model, so);
    }
  }
  std::fprintf(stderr, "loaded %s in %.2f s (weights %s, compute %s, %d threads)\n", model.c_str(),
               std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(),
               o.weight_dtype.c_str(), o.compute_dtype.c_str(), num_threads());
  return c;
}

// Replaces the model's scheduler by the A1111 sampler of --sampler/--schedule; returns its name.
template <class Components>
std::string apply_sampler(Components& c, const GenerateOptions& o, bool quiet = false) {
  if (o.sampler.empty() && o.schedule.empty()) return c.scheduler->class_name();
  const std::string name = o.sampler.empty() ? "default" : o.sampler;
  const SamplerChoice choice = resolve_sampler(name, o.schedule);
  if (!choice.note.empty() && !quiet) std::fprintf(stderr, "note: %s\n", choice.note.c_str());
  c.scheduler = make_sampler(name, o.schedule, c.scheduler->config());
  return choice.sampler;
}

template <class Components>
void generate_with(Components components, GenerateOptions o, const ModelOptions& mo) {
  using F = Family<Components>;
  constexpr bool xl = std::is_same_v<Components, StableDiffusionXLComponents>;
  const std::string sampler_label = apply_sampler(components, o);

  // 2. Parameters.
  const int64_t vsf = components.vae_scale_factor();
  const int64_t default_size =
      components.unet->config().sample_size.value_or(F::default_sample_size) * vsf;
  Tensor init;
  if (!o.init_image.empty()) {
    init = load_image(o.init_image);
    if (o.width == 0) o.width = init.size(2) / 8 * 8;
    if (o.height == 0) o.height = init.size(1) / 8 * 8;
  }
  if (o.width == 0) o.width = default_size;
  if (o.height == 0) o.height = default_size;
  if (o.strength < 0) o.strength = o.mask.empty() ? F::img2img_strength : F::inpaint_strength;
  uint64_t seed = 0;
  if (o.seed >= 0) {
    seed = static_cast<uint64_t>(o.seed);
  } else {
    std::random_device rd;
    seed = rd() & 0xffffffffu;
  }
  ProgressBar progress;
  auto fill = [&](StableDiffusionParams& p) {
    p.prompt = o.prompt;
    if (!o.negative.empty()) p.negative_prompt = o.negative;
    p.num_inference_steps = o.steps;
    p.guidance_scale = o.cfg;
    p.guidance_rescale = o.guidance_rescale;
    p.eta = o.eta;
    p.height = o.height;
    p.width = o.width;
    p.num_images_per_prompt = o.batch;
    if (o.clip_skip > 1) p.clip_skip = o.clip_skip - 1;  // A1111's "2" is diffusers' 1
    p.prompt_weighting = o.prompt_weighting;
    // One seed per image (seed, seed + 1, ...) as A1111 does for batches.
    for (int64_t i = 0; i < o.batch; ++i) p.seeds.push_back(seed + static_cast<uint64_t>(i));
    p.callback = [&progress](const StepInfo& info) { return progress(info); };
  };

  // 3. Run.
  PipelineOutput out;
  progress.restart();
  if (init.defined() && !o.mask.empty()) {
    typename F::Inpaint p;
    fill(p);
    p.image = resize_image(init, o.height, o.width);
    p.mask_image = resize_image(load_image(o.mask, 1), o.height, o.width);
    p.strength = o.strength;
    out = typename F::InpaintPipeline(components)(p);
  } else if (init.defined()) {
    typename F::Img2Img p;
    fill(p);
    p.image = resize_image(init, o.height, o.width);
    p.strength = o.strength;
    out = typename F::Img2ImgPipeline(components)(p);
  } else {
    typename F::Text p;
    fill(p);
    if constexpr (xl) {
      if (!o.refiner.empty()) {
        // The ensemble of expert denoisers: the base runs the first refiner_switch of the
        // schedule and hands its latents to the refiner, which runs the rest.
        p.denoising_end = o.refiner_switch;
        p.output_type = OutputType::latent;
        const Tensor latents = typename F::TextPipeline(components)(p).latents;
        auto refiner = load_model<StableDiffusionXLComponents>(o.refiner, o, mo);
        apply_sampler(refiner, o, true);
        StableDiffusionXLImg2ImgParams r;
        fill(r);
        r.image_latents = latents;
        r.denoising_start = o.refiner_switch;
        progress.restart();
        out = StableDiffusionXLImg2ImgPipeline(refiner)(r);
      }
    }
    if (!out.images.defined()) out = typename F::TextPipeline(components)(p);
  }

  // 4. Write images, A1111 parameters and a recipe per image (batch item i reproduces with
  // seed + i and batch 1).
  for (int64_t i = 0; i < o.batch; ++i) {
    const uint64_t image_seed =
        out.seeds.size() == 1 ? seed : out.seeds[static_cast<std::size_t>(i)];
    const std::string path = output_path(o.output, i, o.batch);
    GenerateOptions one = o;
    one.batch = 1;
    save_png(path, out.images.narrow(0, i, 1),
             {{"parameters", infotext(one, image_seed, o.width, o.height, sampler_label)}});
    const std::string recipe_path = std::filesystem::path(path).replace_extension(".json").string();
    std::ofstream(recipe_path) << recipe_json(one, image_seed, o.width, o.height).dump(2) << "\n";
    std::printf("%s (seed %llu, recipe %s)\n", path.c_str(),
                static_cast<unsigned long long>(image_seed), recipe_path.c_str());
  }
}

void run_generate(GenerateOptions o) {
  if (!o.recipe.empty()) apply_recipe(o, o.recipe);
  DIFFUSE_CHECK(!o.model.empty(),
                "generate: --model is required (a diffusers folder or a single-file checkpoint)");
  if (o.threads > 0) set_num_threads(o.threads);
  DIFFUSE_CHECK(o.clip_skip >= 0, "generate: --clip-skip must be >= 0");
  DIFFUSE_CHECK(o.mask.empty() || !o.init_image.empty(), "generate: --mask needs --init-image");
  DIFFUSE_CHECK(o.refiner_switch > 0.0 && o.refiner_switch < 1.0,
                "generate: --refiner-switch must be in (0, 1), got ", o.refiner_switch);

  // 1. Load the model: a diffusers folder, or an original single-file checkpoint.
  ModelOptions mo;
  mo.weight_dtype = parse_dtype(o.weight_dtype);
  mo.compute_dtype = parse_dtype(o.compute_dtype);
  if (is_sdxl(o.model)) {
    DIFFUSE_CHECK(o.refiner.empty() || o.init_image.empty(),
                  "generate: --refiner works with text-to-image only");
    generate_with(load_model<StableDiffusionXLComponents>(o.model, o, mo), o, mo);
  } else {
    DIFFUSE_CHECK(o.refiner.empty(), "generate: --refiner needs an SDXL base model");
    generate_with(load_model<StableDiffusionComponents>(o.model, o, mo), o, mo);
  }
}

}  // namespace

void add_generate_command(CLI::App& app) {
  auto o = std::make_shared<GenerateOptions>();
  CLI::App* cmd = app.add_subcommand(
      "generate",
      "Generate images with a Stable Diffusion 1.x / 2.x / XL model (text-to-image, "
      "image-to-image with --init-image, inpainting with --init-image and --mask)");
  cmd->add_option("-m,--model", o->model,
                  "diffusers model folder (model_index.json) or an SD 1.x/2.x/XL single-file "
                  "checkpoint (.safetensors, .ckpt)");
  cmd->add_option("--tokenizer", o->tokenizer,
                  "CLIP tokenizer folder for single-file checkpoints (they hold no vocabulary)");
  cmd->add_option("--config", o->config,
                  "single files: a diffusers pipeline folder whose configs (and tokenizers) "
                  "replace the built-in ones of the detected architecture");
  cmd->add_option("--tokenizer-2", o->tokenizer_2,
                  "SDXL single files: text_encoder_2's tokenizer folder (default: --tokenizer)");
  cmd->add_option("--refiner", o->refiner,
                  "SDXL refiner (folder or single file) for the end of the schedule "
                  "(text-to-image)");
  cmd->add_option("--refiner-switch", o->refiner_switch,
                  "fraction of the schedule the base model runs before the refiner")
      ->capture_default_str();
  cmd->add_option("-p,--prompt", o->prompt, "prompt");
  cmd->add_option("-n,--negative-prompt", o->negative, "negative prompt");
  cmd->add_option("--steps", o->steps, "denoising steps")->capture_default_str();
  cmd->add_option("--cfg", o->cfg, "classifier-free guidance scale")->capture_default_str();
  cmd->add_option("--sampler", o->sampler,
                  "A1111/ComfyUI sampler name (\"Euler a\", \"DPM++ 2M\", \"dpmpp_2m_sde\", ...); "
                  "default: the model's scheduler");
  cmd->add_option("--schedule", o->schedule,
                  "sigma schedule: karras, exponential, beta, "
                  "sgm_uniform, simple, normal");
  cmd->add_option("-W,--width", o->width, "width in pixels (multiple of 8; default: model size)");
  cmd->add_option("-H,--height", o->height,
                  "height in pixels (multiple of 8; default: model size)");
  cmd->add_option("--seed", o->seed, "seed (-1: random); image i of a batch uses seed + i")
      ->capture_default_str();
  cmd->add_option("--batch", o->batch, "images to generate")->capture_default_str();
  cmd->add_option("--init-image", o->init_image, "initial image for image-to-image / inpainting");
  cmd->add_option("--strength", o->strength,
                  "how much to change the initial image (default: SD 0.8, inpainting 1.0; "
                  "SDXL 0.3, inpainting 0.9999, as diffusers)");
  cmd->add_option("--mask", o->mask, "inpainting mask (white = repaint)");
  cmd->add_option("--clip-skip", o->clip_skip,
                  "A1111 clip skip: 1 = last layer (default), 2 = penultimate layer, ...");
  cmd->add_flag(
      "--prompt-weighting,!--no-prompt-weighting", o->prompt_weighting,
      "A1111 prompt syntax ((word:1.2), [word], BREAK) and prompts over 75 tokens "
      "(default on; --no-prompt-weighting reads the prompt as literal text like diffusers)");
  cmd->add_option("--guidance-rescale", o->guidance_rescale, "guidance rescale (0 = off)");
  cmd->add_option("--eta", o->eta, "DDIM eta");
  cmd->add_option("-t,--threads", o->threads, "threads (default: all cores)");
  cmd->add_option("--dtype", o->weight_dtype, "weight dtype: f32, f16, bf16")
      ->capture_default_str();
  cmd->add_option("--compute", o->compute_dtype, "compute dtype: f32, bf16")->capture_default_str();
  cmd->add_option("-o,--output", o->output, "output PNG (batches: NAME-i.png)")
      ->capture_default_str();
  cmd->add_option("--recipe", o->recipe,
                  "JSON recipe written by an earlier run (options given on "
                  "the command line are overridden by it)");
  cmd->callback([o] { run_generate(*o); });
}

}  // namespace diffuse::cli
