// Unicode helpers shared by the tokenizers (private): UTF-8 <-> code points with Python's
// replacement rules, character classes by Unicode general category (utf8proc), normalization, and
// Python's str.lower() / str.isspace() semantics.
#pragma once

#include <string>
#include <string_view>

namespace diffuse::tokenizers::unicode {

constexpr char32_t kReplacement = 0xFFFD;

// Decodes UTF-8, replacing every ill-formed sequence by U+FFFD the way Python's
// bytes.decode("utf-8", "replace") does (one U+FFFD per maximal ill-formed subpart: overlong
// forms, surrogates, code points above U+10FFFF, stray continuation bytes, truncated sequences).
std::u32string decode_utf8(std::string_view bytes);
// Encodes code points as UTF-8 (the input holds valid scalar values only).
std::string encode_utf8(std::u32string_view text);
void append_utf8(std::string& out, char32_t cp);
// decode_utf8 followed by encode_utf8: valid UTF-8 comes back unchanged.
std::string sanitize_utf8(std::string_view bytes);

bool is_letter(char32_t cp);   // general category L*
bool is_number(char32_t cp);   // general category N*
bool is_decimal(char32_t cp);  // general category Nd (Python's re \d on str)
// Python's str.isspace(): White_Space characters plus U+001C..U+001F.
bool is_space(char32_t cp);

// Unicode normalization forms NFC and NFKC (utf8proc).
std::u32string nfc(std::u32string_view text);
std::u32string nfkc(std::u32string_view text);

// Python's str.lower(): full lowercase mapping (U+0130 -> "i\u0307") and the Final_Sigma rule.
std::u32string python_lower(std::u32string_view text);

}  // namespace diffuse::tokenizers::unicode
