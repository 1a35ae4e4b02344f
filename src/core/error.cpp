#include "diffuse/core/error.h"

#include <cstdio>
#include <cstdlib>

namespace diffuse::detail {

void throw_error(const char* /*file*/, int /*line*/, const std::string& message) {
  throw Error(message);
}

void assert_fail(const char* file, int line, const char* condition) {
  std::fprintf(stderr, "diffuse: internal error: assertion `%s` failed at %s:%d\n", condition, file,
               line);
  std::abort();
}

}  // namespace diffuse::detail
