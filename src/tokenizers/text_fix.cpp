#include "src/tokenizers/text_fix.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <iterator>

#include "src/tokenizers/unicode_text.h"

namespace diffuse::tokenizers {

namespace {

using unicode::decode_utf8;

struct EntityEntry {
  const char* name;
  const char* value;
};

constexpr EntityEntry kHtmlEntities[] = {
#include "src/tokenizers/html_entities.inc"
};

// ftfy matches entities with r"&#?[0-9A-Za-z]{1,24};".
constexpr std::size_t kMaxEntityBody = 24;
// ftfy.fix_text's max_decode_length: longer lines are cut into pieces of this many code points.
constexpr std::size_t kMaxDecodeLength = 1000000;
// ftfy loops until the text stops changing. Each changing pass is driven by unescape_html
// consuming an entity or by a one-time normalization, so real text settles in two or three
// passes; the cap only bounds hostile input such as "&amp;amp;amp;..." nested thousands deep.
constexpr int kMaxPasses = 64;

bool is_ascii_alnum(char32_t c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

const char* lookup_entity(const std::string& entity) {
  const auto* begin = std::begin(kHtmlEntities);
  const auto* end = std::end(kHtmlEntities);
  const auto* it =
      std::lower_bound(begin, end, entity, [](const EntityEntry& e, const std::string& k) {
        return std::strcmp(e.name, k.c_str()) < 0;
      });
  if (it != end && entity == it->name) return it->value;
  return nullptr;
}

// Windows-1252 for bytes 0x80..0x9F; the five bytes Windows leaves undefined keep their Latin-1
// meaning (ftfy's "sloppy-windows-1252"; also Python html's table for numeric references).
constexpr char32_t kCp1252High[32] = {
    0x20AC, 0x0081, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160,
    0x2039, 0x0152, 0x008D, 0x017D, 0x008F, 0x0090, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022,
    0x2013, 0x2014, 0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0x009D, 0x017E, 0x0178};

// Python's html.unescape for one complete numeric reference ("&#65;", "&#x41;"); returns false
// when the body is not entirely decimal (or 'x' + hex) digits, i.e. html would decode only a
// prefix and leave the ';' behind, in which case ftfy keeps the original text.
bool decode_numeric_reference(std::u32string_view body, std::u32string& out) {
  int base = 10;
  if (!body.empty() && (body[0] == 'x' || body[0] == 'X')) {
    base = 16;
    body.remove_prefix(1);
  }
  if (body.empty()) return false;
  uint64_t num = 0;
  bool huge = false;
  for (char32_t c : body) {
    int digit = -1;
    if (c >= '0' && c <= '9') digit = static_cast<int>(c - '0');
    if (base == 16 && c >= 'a' && c <= 'f') digit = static_cast<int>(c - 'a' + 10);
    if (base == 16 && c >= 'A' && c <= 'F') digit = static_cast<int>(c - 'A' + 10);
    if (digit < 0) return false;
    if (!huge) {
      num = num * static_cast<uint64_t>(base) + static_cast<uint64_t>(digit);
      if (num > 0x10FFFF) huge = true;  // saturate: every such value decodes to U+FFFD
    }
  }
  out.clear();
  if (huge || (num >= 0xD800 && num <= 0xDFFF)) {
    out.push_back(unicode::kReplacement);
  } else if (num == 0) {
    out.push_back(unicode::kReplacement);
  } else if (num == 0x0D) {
    out.push_back(U'\r');
  } else if (num >= 0x80 && num <= 0x9F) {
    out.push_back(kCp1252High[num - 0x80]);
  } else if ((num >= 0x01 && num <= 0x08) || num == 0x0B || (num >= 0x0E && num <= 0x1F) ||
             (num >= 0x7F && num <= 0x9F) || (num >= 0xFDD0 && num <= 0xFDEF) ||
             (num & 0xFFFE) == 0xFFFE) {
    // html drops code points that HTML forbids (controls, noncharacters).
  } else {
    out.push_back(static_cast<char32_t>(num));
  }
  return true;
}

std::u32string unescape_html(std::u32string_view text) {
  std::u32string out;
  out.reserve(text.size());
  std::u32string decoded;
  std::size_t i = 0;
  while (i < text.size()) {
    if (text[i] != '&') {
      out.push_back(text[i++]);
      continue;
    }
    std::size_t body = i + 1;
    const bool numeric = body < text.size() && text[body] == '#';
    if (numeric) ++body;
    std::size_t end = body;
    while (end < text.size() && is_ascii_alnum(text[end])) ++end;
    const std::size_t len = end - body;
    if (len == 0 || len > kMaxEntityBody || end >= text.size() || text[end] != ';') {
      out.push_back(text[i++]);
      continue;
    }
    const std::u32string_view match = text.substr(i, end + 1 - i);
    const char* named = nullptr;
    if (!numeric) named = lookup_entity(unicode::encode_utf8(match));
    if (named != nullptr) {
      out += decode_utf8(named);
    } else if (numeric && decode_numeric_reference(text.substr(body, len), decoded) &&
               decoded.find(U';') == std::u32string::npos) {
      out += decoded;  // (a reference that decodes to ';' stays as written, like ftfy)
    } else {
      out += match;
    }
    i = end + 1;
  }
  return out;
}

std::u32string fix_c1_controls(std::u32string text) {
  for (char32_t& c : text) {
    if (c >= 0x80 && c <= 0x9F) c = kCp1252High[c - 0x80];
  }
  return text;
}

// ftfy's LIGATURES table: Latin typographic ligatures and legacy digraphs, spelled out.
std::u32string_view ligature(char32_t c) {
  switch (c) {
    case 0x0132:
      return U"IJ";
    case 0x0133:
      return U"ij";
    case 0x0149:
      return U"\u02BCn";
    case 0x01F1:
      return U"DZ";
    case 0x01F2:
      return U"Dz";
    case 0x01F3:
      return U"dz";
    case 0x01C4:
      return U"D\u017D";
    case 0x01C5:
      return U"D\u017E";
    case 0x01C6:
      return U"d\u017E";
    case 0x01C7:
      return U"LJ";
    case 0x01C8:
      return U"Lj";
    case 0x01C9:
      return U"lj";
    case 0x01CA:
      return U"NJ";
    case 0x01CB:
      return U"Nj";
    case 0x01CC:
      return U"nj";
    case 0xFB00:
      return U"ff";
    case 0xFB01:
      return U"fi";
    case 0xFB02:
      return U"fl";
    case 0xFB03:
      return U"ffi";
    case 0xFB04:
      return U"ffl";
    case 0xFB05:
      return U"\u017Ft";
    case 0xFB06:
      return U"st";
    default:
      return {};
  }
}

std::u32string fix_latin_ligatures(std::u32string_view text) {
  std::u32string out;
  out.reserve(text.size());
  for (char32_t c : text) {
    const std::u32string_view lig = ligature(c);
    if (lig.empty()) {
      out.push_back(c);
    } else {
      out += lig;
    }
  }
  return out;
}

// ftfy's WIDTH_MAP: U+3000 -> ' ', and every U+FF01..U+FFEF whose NFKC form differs -> that form.
std::u32string fix_character_width(std::u32string_view text) {
  std::u32string out;
  out.reserve(text.size());
  for (char32_t c : text) {
    if (c == 0x3000) {
      out.push_back(U' ');
    } else if (c >= 0xFF01 && c <= 0xFFEF) {
      out += unicode::nfkc(std::u32string_view(&c, 1));
    } else {
      out.push_back(c);
    }
  }
  return out;
}

std::u32string uncurl_quotes(std::u32string text) {
  for (char32_t& c : text) {
    if (c == 0x02BC || (c >= 0x2018 && c <= 0x201B)) c = U'\'';
    if (c >= 0x201C && c <= 0x201F) c = U'"';
  }
  return text;
}

std::u32string fix_line_breaks(std::u32string_view text) {
  std::u32string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char32_t c = text[i];
    if (c == U'\r') {
      if (i + 1 < text.size() && text[i + 1] == U'\n') ++i;
      out.push_back(U'\n');
    } else if (c == 0x2028 || c == 0x2029 || c == 0x85) {
      out.push_back(U'\n');
    } else {
      out.push_back(c);
    }
  }
  return out;
}

// ANSI escapes: "\033[" then decimal digits or ';' then one ASCII letter.
std::u32string remove_terminal_escapes(std::u32string_view text) {
  std::u32string out;
  out.reserve(text.size());
  std::size_t i = 0;
  while (i < text.size()) {
    if (text[i] == 0x1B && i + 1 < text.size() && text[i + 1] == U'[') {
      std::size_t j = i + 2;
      while (j < text.size() && (text[j] == U';' || unicode::is_decimal(text[j]))) ++j;
      if (j < text.size() &&
          ((text[j] >= U'a' && text[j] <= U'z') || (text[j] >= U'A' && text[j] <= U'Z'))) {
        i = j + 1;
        continue;
      }
    }
    out.push_back(text[i++]);
  }
  return out;
}

bool is_removed_control(char32_t c) {
  return c <= 0x08 || c == 0x0B || (c >= 0x0E && c <= 0x1F) || c == 0x7F ||
         (c >= 0x206A && c <= 0x206F) || c == 0xFEFF || (c >= 0xFFF9 && c <= 0xFFFC);
}

std::u32string remove_control_chars(std::u32string_view text) {
  std::u32string out;
  out.reserve(text.size());
  for (char32_t c : text) {
    if (!is_removed_control(c)) out.push_back(c);
  }
  return out;
}

// ftfy.fix_and_explain for one segment.
std::u32string fix_segment(std::u32string text, bool unescape) {
  for (int pass = 0; pass < kMaxPasses; ++pass) {
    const std::u32string before = text;
    if (unescape) text = unescape_html(text);
    text = fix_c1_controls(std::move(text));
    text = fix_latin_ligatures(text);
    text = fix_character_width(text);
    text = uncurl_quotes(std::move(text));
    text = fix_line_breaks(text);
    text = remove_terminal_escapes(text);
    text = remove_control_chars(text);
    text = unicode::nfc(text);
    if (text == before) break;
  }
  return text;
}

}  // namespace

std::u32string ftfy_fix_text(std::u32string_view text) {
  std::u32string out;
  out.reserve(text.size());
  bool unescape = true;  // ftfy's unescape_html="auto"
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::size_t next = text.find(U'\n', pos);
    next = next == std::u32string_view::npos ? text.size() : next + 1;
    if (next - pos > kMaxDecodeLength) next = pos + kMaxDecodeLength;
    const std::u32string_view segment = text.substr(pos, next - pos);
    // Text with '<' may be HTML: from that line on, entities are left alone.
    if (segment.find(U'<') != std::u32string_view::npos) unescape = false;
    out += fix_segment(std::u32string(segment), unescape);
    pos = next;
  }
  return out;
}

std::u32string whitespace_clean(std::u32string_view text) {
  std::u32string out;
  out.reserve(text.size());
  bool pending_space = false;
  for (char32_t c : text) {
    if (unicode::is_space(c)) {
      pending_space = !out.empty();  // leading whitespace is stripped
    } else {
      if (pending_space) out.push_back(U' ');
      pending_space = false;
      out.push_back(c);
    }
  }
  return out;  // trailing whitespace never got written
}

}  // namespace diffuse::tokenizers
