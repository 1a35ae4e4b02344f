// Errors: diffuse::Error for anything a user, a file or an argument can get wrong;
// DIFFUSE_ASSERT for internal bugs (aborts).
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace diffuse {

// Thrown for every user-facing failure: bad arguments, malformed files, missing weights.
// The message names what was expected, what was given and where (file, tensor, key).
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

namespace detail {

template <typename... Args>
std::string concat(Args&&... args) {
  std::ostringstream os;
  (os << ... << std::forward<Args>(args));
  return os.str();
}

[[noreturn]] void throw_error(const char* file, int line, const std::string& message);
[[noreturn]] void assert_fail(const char* file, int line, const char* condition);

}  // namespace detail
}  // namespace diffuse

// Throws diffuse::Error with the streamed message when `cond` is false. Use for user errors.
#define DIFFUSE_CHECK(cond, ...)                                                                  \
  do {                                                                                            \
    if (!(cond)) [[unlikely]] {                                                                   \
      ::diffuse::detail::throw_error(__FILE__, __LINE__, ::diffuse::detail::concat(__VA_ARGS__)); \
    }                                                                                             \
  } while (0)

// Unconditionally throws diffuse::Error with the streamed message.
#define DIFFUSE_FAIL(...) \
  ::diffuse::detail::throw_error(__FILE__, __LINE__, ::diffuse::detail::concat(__VA_ARGS__))

// Aborts with file/line when `cond` is false. Internal invariants only, never user input.
#define DIFFUSE_ASSERT(cond)                                     \
  do {                                                           \
    if (!(cond)) [[unlikely]] {                                  \
      ::diffuse::detail::assert_fail(__FILE__, __LINE__, #cond); \
    }                                                            \
  } while (0)
