// The OpenAI chat-completions API as vLLM, llama.cpp's server and TGI speak
// it: request parsing with errors in OpenAI's shape, response and
// stream-chunk bodies, and turning generated tokens into reply text (stop
// strings, UTF-8 kept whole while streaming).
#pragma once

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/config.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace rlhf::serve {

// An error answered as {"error": {"message", "type", "param", "code"}} with
// an HTTP status.
class ApiError : public std::runtime_error {
 public:
  ApiError(int status, std::string message, std::string param = "", std::string code = "");
  int status() const { return status_; }
  const std::string& param() const { return param_; }
  const std::string& code() const { return code_; }
  std::string type() const;  // "invalid_request_error", "authentication_error", ...
  Json body() const;

 private:
  int status_;
  std::string param_, code_;
};

struct RequestLimits {
  int max_n = 4;                 // most choices per request
  int default_max_tokens = 256;  // when a request names none (then cut to the context)
  int max_stop = 4;              // stop strings per request
  size_t max_stop_bytes = 256;   // longest stop string
};

// A parsed /v1/chat/completions or /v1/completions request.
struct CompletionRequest {
  bool chat = true;
  Conversation messages;          // chat
  std::string prompt;             // completions: raw text continued as is
  std::string model;              // empty when not given
  double temperature = 1.0;       // 0 = greedy
  double top_p = 1.0;
  int top_k = 0;                  // an extension (vLLM's): 0 = off
  std::optional<int> max_tokens;  // "max_tokens" or "max_completion_tokens"
  std::vector<std::string> stop;
  int n = 1;
  std::optional<int64_t> seed;
  bool stream = false;
  bool include_usage = false;     // stream_options.include_usage
};

// Both throw ApiError(400) naming the field: bad JSON, a wrong type, an
// unknown role, a value out of range.
CompletionRequest parse_chat_request(const std::string& body, const RequestLimits& limits);
CompletionRequest parse_completion_request(const std::string& body, const RequestLimits& limits);

// Body of the non-streaming response. `texts`, `finish` and
// `completion_tokens` have one entry per choice.
struct Choices {
  std::vector<std::string> texts;
  std::vector<std::string> finish;  // "stop" or "length"
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
};
Json completion_response(const CompletionRequest& request, const std::string& id, int64_t created,
                         const std::string& model, const Choices& choices);
// One streamed chunk: a delta of `text` for choice `index` (with the role on
// a chat stream's first chunk), or its finish reason.
Json stream_chunk(const CompletionRequest& request, const std::string& id, int64_t created, const std::string& model,
                  int index, const std::string& text, bool first, const std::string& finish);
Json usage_json(int64_t prompt_tokens, int64_t completion_tokens);

// JSON text that never fails on invalid UTF-8 (replaced by U+FFFD).
std::string dump(const Json& j);

// Generated tokens to reply text, for one choice. push() returns the text
// that is now safe to send: held back are an incomplete UTF-8 character and
// anything that could be the start of a stop string. A stop string ends the
// reply (it is not part of it).
class ReplyDecoder {
 public:
  ReplyDecoder(const Tokenizer& tokenizer, std::vector<std::string> stop);
  std::string push(int32_t token);
  // The rest of the reply once generation ended.
  std::string finish();
  bool stopped() const { return stopped_; }
  const std::string& text() const { return sent_; }  // the reply so far, as sent (valid UTF-8)
  int64_t tokens() const { return tokens_; }

 private:
  const Tokenizer* tokenizer_;
  std::vector<std::string> stop_;
  size_t longest_stop_ = 0;
  int64_t tokens_ = 0;
  std::string decoded_;  // raw bytes of every token so far (byte-level BPE decodes token by token)
  std::string text_;     // the part of decoded_ released
  std::string sent_;  // the same as valid UTF-8
  std::string release(std::string raw);
  bool stopped_ = false;
};

// `s` with each byte that is not part of a valid UTF-8 character replaced by
// U+FFFD (a model can emit any bytes; JSON and the label store want text).
std::string to_valid_utf8(std::string_view s);

// Bytes at the end of `s` that start a UTF-8 character not yet complete.
size_t incomplete_utf8_tail(const std::string& s);

}  // namespace rlhf::serve
