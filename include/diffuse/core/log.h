// Logging to stderr with a global level (DIFFUSE_LOG_LEVEL=debug|info|warn|error|off).
#pragma once

#include <string_view>

#include "diffuse/core/error.h"

namespace diffuse {

enum class LogLevel { debug = 0, info = 1, warn = 2, error = 3, off = 4 };

void set_log_level(LogLevel level);
LogLevel log_level();
void log_message(LogLevel level, std::string_view message);

template <typename... Args>
void log_warn(Args&&... args) {
  if (log_level() <= LogLevel::warn)
    log_message(LogLevel::warn, detail::concat(std::forward<Args>(args)...));
}
template <typename... Args>
void log_info(Args&&... args) {
  if (log_level() <= LogLevel::info)
    log_message(LogLevel::info, detail::concat(std::forward<Args>(args)...));
}
template <typename... Args>
void log_debug(Args&&... args) {
  if (log_level() <= LogLevel::debug)
    log_message(LogLevel::debug, detail::concat(std::forward<Args>(args)...));
}

}  // namespace diffuse
