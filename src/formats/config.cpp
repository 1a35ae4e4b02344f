#include "diffuse/formats/config.h"

#include <fstream>
#include <sstream>

#include "diffuse/core/log.h"

namespace diffuse {

int64_t IntOrList::at(std::size_t i, std::size_t n, const char* key) const {
  if (!is_list) return values.at(0);
  DIFFUSE_CHECK(values.size() == n, "config '", key, "' has ", values.size(),
                " entries but there are ", n, " blocks");
  return values[i];
}

nlohmann::json read_json_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  DIFFUSE_CHECK(in.good(), "cannot open '", path.string(), "'");
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    DIFFUSE_FAIL("'", path.string(), "' is not valid JSON: ", e.what());
  }
}

ConfigReader::ConfigReader(const nlohmann::json& config, std::string owner)
    : config_(config), owner_(std::move(owner)) {
  DIFFUSE_CHECK(config_.is_object(), owner_, ": config must be a JSON object, got ",
                config_.type_name());
}

bool ConfigReader::has(const std::string& key) const {
  return config_.contains(key);
}

ConfigReader& ConfigReader::ignore(std::initializer_list<const char*> keys) {
  for (const char* k : keys) used_.insert(k);
  return *this;
}

std::vector<std::string> ConfigReader::finish() {
  std::vector<std::string> unknown;
  for (auto it = config_.begin(); it != config_.end(); ++it) {
    if (!it.key().empty() && it.key()[0] == '_') continue;
    if (!used_.count(it.key())) unknown.push_back(it.key());
  }
  if (!unknown.empty()) {
    std::ostringstream os;
    for (std::size_t i = 0; i < unknown.size(); ++i)
      os << (i ? ", " : "") << "'" << unknown[i] << "'";
    log_warn("the config attributes {", os.str(), "} were passed to ", owner_,
             ", but are not expected and will be ignored");
  }
  return unknown;
}

void ConfigReader::type_error(const std::string& key, const char* expected) const {
  DIFFUSE_FAIL(owner_, ": config key '", key, "' must be ", expected, ", got ",
               config_.at(key).dump());
}

}  // namespace diffuse
