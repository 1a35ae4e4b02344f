#include "diffuse/core/log.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>

namespace diffuse {
namespace {

LogLevel level_from_env() {
  const char* v = std::getenv("DIFFUSE_LOG_LEVEL");
  if (v == nullptr) return LogLevel::warn;
  if (std::strcmp(v, "debug") == 0) return LogLevel::debug;
  if (std::strcmp(v, "info") == 0) return LogLevel::info;
  if (std::strcmp(v, "error") == 0) return LogLevel::error;
  if (std::strcmp(v, "off") == 0) return LogLevel::off;
  return LogLevel::warn;
}

std::atomic<LogLevel>& level_ref() {
  static std::atomic<LogLevel> level{level_from_env()};
  return level;
}

}  // namespace

void set_log_level(LogLevel level) {
  level_ref().store(level);
}
LogLevel log_level() {
  return level_ref().load();
}

void log_message(LogLevel level, std::string_view message) {
  static std::mutex mutex;
  static constexpr const char* kNames[] = {"debug", "info", "warning", "error", ""};
  std::lock_guard<std::mutex> lock(mutex);
  std::fprintf(stderr, "diffuse: %s: %.*s\n", kNames[static_cast<int>(level)],
               static_cast<int>(message.size()), message.data());
}

}  // namespace diffuse
