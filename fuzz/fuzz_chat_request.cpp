// The chat server's request bodies: any bytes as POST /v1/chat/completions
// and /v1/completions. A bad request is an ApiError (HTTP 400 naming the
// field), never anything else, and what is accepted is within the limits.
#include <cstdlib>
#include <string>

#include "common/error.h"
#include "serve/openai.h"

using namespace rlhf::serve;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string body(reinterpret_cast<const char*>(data), size);
  const RequestLimits limits;
  for (bool chat : {true, false}) {
    try {
      const CompletionRequest r = chat ? parse_chat_request(body, limits) : parse_completion_request(body, limits);
      if (r.n < 1 || r.n > limits.max_n || r.stop.size() > static_cast<size_t>(limits.max_stop)) std::abort();
      for (const auto& s : r.stop)
        if (s.size() > limits.max_stop_bytes) std::abort();
    } catch (const ApiError&) {
    }
  }
  to_valid_utf8(body);
  return 0;
}
