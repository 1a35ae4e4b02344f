// The text clean-up transformers' CLIPTokenizer runs before BPE when ftfy is installed:
// ftfy.fix_text (ftfy 6.3.1, default TextFixerConfig) followed by CLIP's whitespace_clean.
// Private to the tokenizers library.
//
// Implemented, in ftfy's order, repeated until the text no longer changes (per line, as ftfy
// does, with the HTML "auto" rule: entities are left alone from the first line containing '<'):
//   unescape_html        named HTML5 entities (plus ftfy's upper-cased variants) and numeric
//                        character references, decoded as html.unescape does
//   fix_c1_controls      U+0080..U+009F re-read as Windows-1252 (undefined bytes kept)
//   fix_latin_ligatures  ﬁ ﬂ ﬀ ﬃ ﬄ ﬅ ﬆ Ĳ ĳ ŉ Ǳ..ǳ Ǆ..ǌ split into their letters
//   fix_character_width  full-width / half-width forms (U+FF01..U+FFEF) and U+3000 to standard
//   uncurl_quotes        U+02BC, U+2018..U+201B -> '\'', U+201C..U+201F -> '"'
//   fix_line_breaks      CRLF, CR, U+2028, U+2029, U+0085 -> '\n'
//   remove_terminal_escapes  ESC [ digits/; letter
//   remove_control_chars U+0000..U+0008, U+000B, U+000E..U+001F, U+007F, U+206A..U+206F,
//                        U+FEFF, U+FFF9..U+FFFC
//   normalization        NFC
// Not implemented: ftfy's mojibake repair (`fix_encoding`: re-decoding text such as "cafÃ©"
// that was UTF-8 read as Windows-1252/Latin-1/MacRoman/...). It only touches text that ftfy's
// badness heuristic flags, which ordinary prompts never are; such text is tokenized as written.
// fix_surrogates has nothing to do: the input is UTF-8, where surrogates cannot occur.
#pragma once

#include <string>
#include <string_view>

namespace diffuse::tokenizers {

// ftfy.fix_text with ftfy's defaults minus fix_encoding (see above).
std::u32string ftfy_fix_text(std::u32string_view text);

// CLIP's whitespace_clean: runs of whitespace (Python str.isspace) become one ' ', then the ends
// are stripped.
std::u32string whitespace_clean(std::u32string_view text);

}  // namespace diffuse::tokenizers
