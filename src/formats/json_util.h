// JSON helpers shared by the format parsers (private).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "diffuse/core/error.h"

namespace diffuse::detail {

// Nesting deeper than this is no weight header or config; refusing it before parsing keeps the
// recursive destruction of a parsed document from overflowing the stack on hostile input.
inline constexpr int kMaxJsonDepth = 64;

// Throws diffuse::Error naming `where` and the byte offset when `text` nests '[' / '{' deeper
// than kMaxJsonDepth outside strings. Does not otherwise validate the JSON.
inline void check_json_depth(std::string_view text, const std::string& where) {
  int depth = 0;
  bool in_string = false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      DIFFUSE_CHECK(++depth <= kMaxJsonDepth, where, ": JSON nested deeper than ", kMaxJsonDepth,
                    " levels at byte ", i);
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
}

}  // namespace diffuse::detail
