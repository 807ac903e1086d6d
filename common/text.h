// Text from outside (a client, a rater) made safe for one log line or an
// error message.
#pragma once

#include <string>
#include <string_view>

namespace rlhf {

// Control characters (a newline would forge a log line) become '?', and the
// text is cut at `max_chars` bytes with "..." after it.
inline std::string printable(std::string_view s, size_t max_chars = 80) {
  std::string out;
  for (char c : s.substr(0, max_chars)) out += (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) ? '?' : c;
  return s.size() > max_chars ? out + "..." : out;
}

}  // namespace rlhf
