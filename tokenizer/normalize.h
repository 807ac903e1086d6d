// Unicode normalisation form C (NFC), as the "NFC" normalizer of Hugging Face
// tokenizers applies it (Qwen2/2.5/3): canonical decomposition, canonical
// ordering, then canonical composition. Tables: tokenizer/unicode_tables.inc.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace rlhf {

// NFC of UTF-8 text. Text that is not valid UTF-8 comes back unchanged.
std::string nfc(std::string_view text);

// Appends a code point's UTF-8 bytes.
void append_utf8(std::string& out, uint32_t cp);

}  // namespace rlhf
