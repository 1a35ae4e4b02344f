// The diffusers folder layout (what `DiffusionPipeline.save_pretrained` writes and the Hub hosts):
//
//   <pipeline>/model_index.json     {"_class_name": "StableDiffusionPipeline",
//                                    "unet": ["diffusers", "UNet2DConditionModel"],
//                                    "safety_checker": [null, null], "requires_...": false, ...}
//   <pipeline>/<component>/config.json               models (diffusers and transformers)
//   <pipeline>/<component>/scheduler_config.json     schedulers
//   <pipeline>/<component>/<weights>                 see find_weight_files()
//   <pipeline>/tokenizer*/vocab.json, merges.txt, tokenizer_config.json, special_tokens_map.json
//                         (CLIP), spiece.model / tokenizer.json (T5)
//
// Weight files are resolved as diffusers' `_get_model_file` does (modeling_utils.py,
// constants.py): a sharded index first, then the single file; safetensors before PyTorch .bin;
// diffusers names before transformers names; `variant` inserted before the last extension
// (`_add_variant`): diffusion_pytorch_model.fp16.safetensors,
// diffusion_pytorch_model.safetensors.index.fp16.json.
#pragma once

#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "diffuse/formats/tensor_source.h"

namespace diffuse {

struct DiffusersComponent {
  std::string name;        // "unet"
  std::string library;     // "diffusers", "transformers"
  std::string class_name;  // "UNet2DConditionModel"
};

struct ModelIndex {
  std::string class_name;                      // _class_name
  std::string diffusers_version;               // _diffusers_version ("" when absent)
  std::vector<DiffusersComponent> components;  // in file order; [null, null] entries omitted
  std::vector<std::string> absent;             // components declared as [null, null]
  std::map<std::string, std::string> options;  // other keys (JSON text of their values)
};

// Parses model_index.json text. Throws diffuse::Error naming `where` for malformed JSON, a
// missing _class_name, component entries that are not [library, class] pairs of strings, or
// component names that are not plain folder names.
ModelIndex parse_model_index(std::string_view json, const std::string& where);

// _add_variant: "diffusion_pytorch_model.safetensors" + "fp16" ->
// "diffusion_pytorch_model.fp16.safetensors". An empty variant returns the name unchanged.
std::string add_variant(std::string_view weights_name, std::string_view variant);

struct WeightFiles {
  std::vector<std::filesystem::path> files;    // one file, or every shard
  std::optional<std::filesystem::path> index;  // the *.index*.json of a sharded checkpoint
  bool safetensors = true;
};
// Resolves the weights of one component folder. Throws diffuse::Error listing the names tried.
WeightFiles find_weight_files(const std::filesystem::path& folder, std::string_view variant = {});

// config.json, or scheduler_config.json for schedulers, or preprocessor_config.json; throws
// diffuse::Error naming the folder when none exists.
std::filesystem::path find_config_file(const std::filesystem::path& folder);

struct TokenizerFiles {
  std::filesystem::path folder;
  std::optional<std::filesystem::path> vocab_json, merges_txt, tokenizer_config_json,
      special_tokens_map_json, tokenizer_json, spiece_model;
};
// Finds the tokenizer files of a folder; throws diffuse::Error when it has neither
// vocab.json + merges.txt, nor spiece.model, nor tokenizer.json.
TokenizerFiles find_tokenizer_files(const std::filesystem::path& folder);

class DiffusersPipelineFolder {
 public:
  // Reads <root>/model_index.json. Throws diffuse::Error when absent or malformed.
  static DiffusersPipelineFolder open(const std::filesystem::path& root);

  const std::filesystem::path& root() const { return root_; }
  const ModelIndex& index() const { return index_; }
  // nullptr when the pipeline does not have it (or declares it [null, null]).
  const DiffusersComponent* find(std::string_view name) const;
  // Throws diffuse::Error naming the components present.
  const DiffusersComponent& component(std::string_view name) const;
  std::filesystem::path folder(std::string_view name) const;
  std::filesystem::path config_path(std::string_view name) const;
  WeightFiles weight_files(std::string_view name, std::string_view variant = {}) const;
  std::shared_ptr<TensorSource> open_weights(std::string_view name,
                                             std::string_view variant = {}) const;
  TokenizerFiles tokenizer_files(std::string_view name) const;

 private:
  std::filesystem::path root_;
  ModelIndex index_;
};

}  // namespace diffuse
