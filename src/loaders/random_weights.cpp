// Random weights for diffusers model configs: the model itself, built over a recording source,
// says which tensors it loads; RandomTensorSource gives their values.
#include "diffuse/loaders/random_weights.h"

#include <fstream>
#include <mutex>
#include <set>

#include "diffuse/core/log.h"
#include "diffuse/formats/config.h"
#include "diffuse/formats/tensor_source.h"
#include "diffuse/formats/weight_loader.h"
#include "diffuse/models/autoencoder_kl.h"
#include "diffuse/models/clip_text_model.h"
#include "diffuse/models/unet_2d_condition.h"

namespace diffuse {
namespace {

// Lists nothing and answers every request with broadcast zeros of the requested shape (one
// element of storage), recording the name and shape asked for. Floating tensors are recorded in
// the file's dtype whatever dtype the model asks for (models keep biases and norm parameters in
// f32 at run time, but checkpoints store every floating tensor in one dtype).
class RecordingTensorSource final : public TensorSource {
 public:
  explicit RecordingTensorSource(DType file_dtype)
      : TensorSource("shape recorder"), file_dtype_(file_dtype) {}
  std::string_view format() const override { return "recording"; }
  std::optional<Tensor> synthesize(std::string_view name, const Shape& shape,
                                   DType dtype) const override {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (seen_.insert(std::string(name)).second)
        specs_.push_back({std::string(name), is_floating(dtype) ? file_dtype_ : dtype, shape});
    }
    const Shape ones(shape.size(), 1);
    return Tensor::zeros(ones, dtype).expand(shape);
  }
  std::vector<SafetensorsTensorSpec> specs() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return specs_;
  }

 protected:
  Tensor load(const TensorInfo& info) const override {
    DIFFUSE_FAIL("shape recorder: no tensor named '", info.name, "'");
  }

 private:
  DType file_dtype_;
  mutable std::mutex mutex_;
  mutable std::vector<SafetensorsTensorSpec> specs_;
  mutable std::set<std::string, std::less<>> seen_;
};

bool is_pipeline_folder(const std::filesystem::path& p) {
  return std::filesystem::is_directory(p) && std::filesystem::exists(p / "model_index.json");
}

void copy_one_file(const std::filesystem::path& from, const std::filesystem::path& to) {
  std::error_code ec;
  std::filesystem::create_directories(to.parent_path(), ec);
  std::filesystem::copy_file(from, to, std::filesystem::copy_options::overwrite_existing, ec);
  DIFFUSE_CHECK(!ec, "cannot copy '", from.string(), "' to '", to.string(), "': ", ec.message());
}

bool ends_with(const std::string& s, std::string_view suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Writes random weights for one model config to `file`.
void write_model(const nlohmann::json& config, const std::filesystem::path& file,
                 const RandomWeightsOptions& o) {
  const auto specs = model_weight_specs(config, o.dtype);
  const RandomTensorSource random(o.seed, o.std);
  std::error_code ec;
  if (file.has_parent_path()) std::filesystem::create_directories(file.parent_path(), ec);
  save_safetensors_streaming(
      file, specs,
      [&](const SafetensorsTensorSpec& s) { return *random.synthesize(s.name, s.shape, s.dtype); },
      {{"format", "pt"}});
}

}  // namespace

std::string_view model_class_name(ModelClass c) {
  switch (c) {
    case ModelClass::unet_2d_condition:
      return "UNet2DConditionModel";
    case ModelClass::autoencoder_kl:
      return "AutoencoderKL";
    case ModelClass::clip_text_model:
      return "CLIPTextModel";
  }
  return "unknown";
}

ModelClass model_class_of(const nlohmann::json& config, const std::string& where) {
  DIFFUSE_CHECK(config.is_object(), where, ": a model config must be a JSON object");
  std::string name;
  if (config.contains("_class_name") && config["_class_name"].is_string()) {
    name = config["_class_name"].get<std::string>();
  } else if (config.contains("architectures") && config["architectures"].is_array() &&
             !config["architectures"].empty() && config["architectures"][0].is_string()) {
    name = config["architectures"][0].get<std::string>();
  } else if (config.contains("model_type") && config["model_type"].is_string()) {
    name = config["model_type"].get<std::string>();
  }
  if (name == "UNet2DConditionModel") return ModelClass::unet_2d_condition;
  if (name == "AutoencoderKL") return ModelClass::autoencoder_kl;
  if (name == "CLIPTextModel" || name == "CLIPTextModelWithProjection" || name == "clip_text_model")
    return ModelClass::clip_text_model;
  DIFFUSE_FAIL(where, ": unsupported model class '", name.empty() ? "(none)" : name,
               "' (from _class_name / architectures); supported: UNet2DConditionModel, "
               "AutoencoderKL, CLIPTextModel, CLIPTextModelWithProjection");
}

std::string weights_file_name(ModelClass c) {
  return c == ModelClass::clip_text_model ? "model.safetensors"
                                          : "diffusion_pytorch_model.safetensors";
}

std::vector<SafetensorsTensorSpec> model_weight_specs(const nlohmann::json& config, DType dtype) {
  auto recorder = std::make_shared<RecordingTensorSource>(dtype);
  const WeightLoader w(recorder, dtype);
  switch (model_class_of(config)) {
    case ModelClass::unet_2d_condition:
      UNet2DConditionModel(UNet2DConditionConfig::from_json(config), w);
      break;
    case ModelClass::autoencoder_kl:
      AutoencoderKL(AutoencoderKLConfig::from_json(config), w);
      break;
    case ModelClass::clip_text_model:
      CLIPTextModel(CLIPTextConfig::from_json(config), w);
      break;
  }
  return recorder->specs();
}

std::vector<std::filesystem::path> write_random_weights(
    const std::filesystem::path& config_or_folder, const std::filesystem::path& out,
    const RandomWeightsOptions& options) {
  DIFFUSE_CHECK(
      options.dtype == DType::f32 || options.dtype == DType::f16 || options.dtype == DType::bf16,
      "random weights: dtype must be f32, f16 or bf16, got ", dtype_name(options.dtype));
  std::vector<std::filesystem::path> written;
  if (is_pipeline_folder(config_or_folder)) {
    DIFFUSE_CHECK(!ends_with(out.string(), ".safetensors"),
                  "random weights: ", config_or_folder.string(),
                  " is a pipeline folder, so the output '", out.string(),
                  "' must be a folder, not a .safetensors file");
    const auto index = read_json_file(config_or_folder / "model_index.json");
    copy_one_file(config_or_folder / "model_index.json", out / "model_index.json");
    for (auto it = index.begin(); it != index.end(); ++it) {
      const std::string& name = it.key();
      if (name.empty() || name[0] == '_' || !it.value().is_array()) continue;
      const auto src = config_or_folder / name;
      if (!std::filesystem::is_directory(src)) continue;
      // Small files (configs, tokenizer vocabularies) are copied; weight files are not.
      for (const auto& e : std::filesystem::directory_iterator(src)) {
        const std::string f = e.path().filename().string();
        if (!e.is_regular_file() || ends_with(f, ".safetensors") || ends_with(f, ".bin") ||
            ends_with(f, ".ckpt") || ends_with(f, ".index.json"))
          continue;
        copy_one_file(e.path(), out / name / f);
      }
      if (!std::filesystem::exists(src / "config.json")) continue;
      const auto config = read_json_file(src / "config.json");
      ModelClass c;
      try {
        c = model_class_of(config, (src / "config.json").string());
      } catch (const Error& e) {
        log_warn(std::string("random weights: component '") + name +
                 "' left without weights: " + e.what());
        continue;
      }
      const auto file = out / name / weights_file_name(c);
      write_model(config, file, options);
      written.push_back(file);
    }
    return written;
  }
  const auto config_path = std::filesystem::is_directory(config_or_folder)
                               ? config_or_folder / "config.json"
                               : config_or_folder;
  const auto config = read_json_file(config_path);
  const ModelClass c = model_class_of(config, config_path.string());
  std::filesystem::path file = out;
  if (!ends_with(out.string(), ".safetensors")) {
    copy_one_file(config_path, out / "config.json");
    file = out / weights_file_name(c);
  }
  write_model(config, file, options);
  written.push_back(file);
  return written;
}

}  // namespace diffuse
