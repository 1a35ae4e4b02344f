// ConfigReader: reads a diffusers/transformers config.json into a config struct, one line per
// field, with diffusers' semantics.
//
//   UNet2DConditionConfig c;                  // defaults = diffusers' __init__ defaults
//   ConfigReader r(json, "UNet2DConditionModel");
//   r.get("in_channels", c.in_channels);      // absent key -> default kept
//   r.get("block_out_channels", c.block_out_channels);
//   r.finish();                               // warns about keys it did not read
//
// A key that is present with the wrong JSON type is an Error naming the class and the key.
// `null` is accepted for std::optional fields (-> nullopt) and means "keep the default" for
// others, as diffusers treats a null config value like an absent one for most fields. Keys
// starting with '_' are diffusers/transformers bookkeeping and are never reported. Not
// thread-safe (one reader per thread).
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "diffuse/core/error.h"

namespace diffuse {

// A config value that diffusers accepts either as one int or as a per-block list
// (attention_head_dim, transformer_layers_per_block, ...).
struct IntOrList {
  std::vector<int64_t> values;
  bool is_list = false;

  IntOrList() = default;
  IntOrList(int64_t v) : values{v} {}  // NOLINT: implicit like Python's int
  IntOrList(std::vector<int64_t> v) : values(std::move(v)), is_list(true) {}
  // The value for block `i` of `n`: the single int repeated, or the list entry. Throws when a
  // list has a length other than `n`.
  int64_t at(std::size_t i, std::size_t n, const char* key) const;
};

// Reads and parses a JSON file; throws diffuse::Error naming the file on I/O or syntax errors.
nlohmann::json read_json_file(const std::filesystem::path& path);

class ConfigReader {
 public:
  // `owner` names the class in messages ("UNet2DConditionModel", "EulerDiscreteScheduler").
  // Throws when `config` is not a JSON object.
  ConfigReader(const nlohmann::json& config, std::string owner);

  // Reads `key` into `out` when present and not null; leaves the default otherwise. Supported
  // types: bool, int, int64_t, double, float, std::string, std::vector of those, IntOrList,
  // nlohmann::json (raw), std::optional of those (null -> nullopt).
  template <typename T>
  ConfigReader& get(const std::string& key, T& out);

  bool has(const std::string& key) const;
  // Marks keys as known without reading them (accepted for compatibility, no effect).
  ConfigReader& ignore(std::initializer_list<const char*> keys);
  // Logs one warning listing the keys that were neither read nor ignored, as diffusers does
  // ("The config attributes {...} were passed to X, but are not expected and will be
  // ignored."). Returns those keys.
  std::vector<std::string> finish();

  const std::string& owner() const { return owner_; }

 private:
  const nlohmann::json& value(const std::string& key);
  [[noreturn]] void type_error(const std::string& key, const char* expected) const;
  template <typename T>
  T convert(const nlohmann::json& v, const std::string& key) const;

  const nlohmann::json& config_;
  std::string owner_;
  std::set<std::string> used_;
};

// --- Template implementation -----------------------------------------------------------------

namespace detail {
template <typename T>
struct IsVector : std::false_type {};
template <typename T>
struct IsVector<std::vector<T>> : std::true_type {};
template <typename T>
struct IsOptional : std::false_type {};
template <typename T>
struct IsOptional<std::optional<T>> : std::true_type {};
}  // namespace detail

template <typename T>
T ConfigReader::convert(const nlohmann::json& v, const std::string& key) const {
  if constexpr (std::is_same_v<T, bool>) {
    if (!v.is_boolean()) type_error(key, "a boolean");
    return v.get<bool>();
  } else if constexpr (std::is_integral_v<T>) {
    // JSON written by Python may hold 2.0 for an int field; accept integral floats.
    if (v.is_number_integer()) return v.get<T>();
    if (v.is_number_float() &&
        v.get<double>() == static_cast<double>(static_cast<T>(v.get<double>())))
      return static_cast<T>(v.get<double>());
    type_error(key, "an integer");
  } else if constexpr (std::is_floating_point_v<T>) {
    if (v.is_number()) return v.get<T>();
    // Reference JSON writes non-finite floats as strings.
    if (v.is_string()) {
      const auto s = v.get<std::string>();
      if (s == "inf" || s == "Infinity") return std::numeric_limits<T>::infinity();
      if (s == "-inf" || s == "-Infinity") return -std::numeric_limits<T>::infinity();
      if (s == "nan" || s == "NaN") return std::numeric_limits<T>::quiet_NaN();
    }
    type_error(key, "a number");
  } else if constexpr (std::is_same_v<T, std::string>) {
    if (!v.is_string()) type_error(key, "a string");
    return v.get<std::string>();
  } else if constexpr (std::is_same_v<T, nlohmann::json>) {
    return v;  // raw value, for fields with irregular shapes (lists of lists, ...)
  } else if constexpr (std::is_same_v<T, IntOrList>) {
    if (v.is_array()) return IntOrList(convert<std::vector<int64_t>>(v, key));
    return IntOrList(convert<int64_t>(v, key));
  } else if constexpr (detail::IsVector<T>::value) {
    // diffusers stores tuples as JSON lists.
    if (!v.is_array()) type_error(key, "a list");
    T out;
    for (const auto& e : v) out.push_back(convert<typename T::value_type>(e, key));
    return out;
  } else {
    static_assert(sizeof(T) == 0, "unsupported config field type");
  }
}

template <typename T>
ConfigReader& ConfigReader::get(const std::string& key, T& out) {
  used_.insert(key);
  if (!config_.contains(key)) return *this;
  const nlohmann::json& v = config_.at(key);
  if constexpr (detail::IsOptional<T>::value) {
    if (v.is_null()) {
      out.reset();
    } else {
      out = convert<typename T::value_type>(v, key);
    }
  } else {
    if (!v.is_null()) out = convert<T>(v, key);
  }
  return *this;
}

}  // namespace diffuse
