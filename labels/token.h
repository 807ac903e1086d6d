// Rater tokens: `rlhf raters add NAME` prints a random token once; the store
// keeps only its SHA-256, so a leaked database does not leak credentials.
#pragma once

#include <string>

namespace rlhf::labels {

// 32 random bytes from the operating system, as 64 hex digits.
std::string new_rater_token();
// SHA-256 of `data` as 64 lowercase hex digits (FIPS 180-4).
std::string sha256_hex(const std::string& data);

}  // namespace rlhf::labels
