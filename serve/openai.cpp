#include "serve/openai.h"

#include <algorithm>
#include <cmath>

#include "common/error.h"

namespace rlhf::serve {

ApiError::ApiError(int status, std::string message, std::string param, std::string code)
    : std::runtime_error(std::move(message)), status_(status), param_(std::move(param)), code_(std::move(code)) {}

std::string ApiError::type() const {
  switch (status_) {
    case 401: return "authentication_error";
    case 404: return code_ == "model_not_found" ? "invalid_request_error" : "not_found_error";
    case 413: return "invalid_request_error";
    case 429: return "rate_limit_error";
    case 503: return "service_unavailable";
    default: return status_ >= 500 ? "server_error" : "invalid_request_error";
  }
}

Json ApiError::body() const {
  return {{"error",
           {{"message", what()},
            {"type", type()},
            {"param", param_.empty() ? Json() : Json(param_)},
            {"code", code_.empty() ? Json() : Json(code_)}}}};
}

std::string dump(const Json& j) { return j.dump(-1, ' ', false, Json::error_handler_t::replace); }

namespace {

[[noreturn]] void bad(const std::string& param, const std::string& message) { throw ApiError(400, message, param); }

Json parse_body(const std::string& body) {
  Json j;
  try {
    j = parse_json(body, "the request body");
  } catch (const Json::exception& e) {
    throw ApiError(400, str_cat("the request body is not valid JSON: ", e.what()));
  } catch (const Error& e) {
    throw ApiError(400, e.what());
  }
  if (!j.is_object()) throw ApiError(400, "the request body must be a JSON object");
  return j;
}

double number_in(const Json& j, const char* key, double lo, double hi, double fallback) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  const Json& v = j[key];
  if (!v.is_number()) bad(key, str_cat("\"", key, "\" must be a number"));
  const double x = v.get<double>();
  if (!std::isfinite(x) || x < lo || x > hi) bad(key, str_cat("\"", key, "\" must be between ", lo, " and ", hi));
  return x;
}

std::optional<int64_t> integer_in(const Json& j, const char* key, int64_t lo, int64_t hi) {
  if (!j.contains(key) || j[key].is_null()) return std::nullopt;
  const Json& v = j[key];
  if (v.is_number_float()) {
    const double d = v.get<double>();
    if (std::isfinite(d) && d == std::floor(d) && d >= static_cast<double>(lo) && d <= static_cast<double>(hi)) {
      return static_cast<int64_t>(d);
    }
  }
  if (v.is_number_unsigned() && v.get<uint64_t>() <= static_cast<uint64_t>(hi)) return v.get<int64_t>();
  if (v.is_number_integer() && !v.is_number_unsigned() && v.get<int64_t>() >= lo && v.get<int64_t>() <= hi) {
    return v.get<int64_t>();
  }
  if (!v.is_number()) bad(key, str_cat("\"", key, "\" must be an integer"));
  bad(key, str_cat("\"", key, "\" must be an integer between ", lo, " and ", hi));
}

bool bool_in(const Json& j, const char* key) {
  if (!j.contains(key) || j[key].is_null()) return false;
  if (!j[key].is_boolean()) bad(key, str_cat("\"", key, "\" must be true or false"));
  return j[key].get<bool>();
}

// Message content: a string, or a list of {"type": "text", "text"} parts.
std::string content_text(const Json& m, size_t i) {
  const std::string param = str_cat("messages[", i, "].content");
  if (!m.contains("content") || m["content"].is_null()) bad(param, str_cat("messages[", i, "] has no \"content\""));
  const Json& c = m["content"];
  if (c.is_string()) return c.get<std::string>();
  if (c.is_array()) {
    std::string out;
    for (const Json& part : c) {
      if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") || !part["text"].is_string()) {
        bad(param, str_cat(param, ": only text parts ({\"type\": \"text\", \"text\": ...}) are supported"));
      }
      out += part["text"].get<std::string>();
    }
    return out;
  }
  bad(param, str_cat(param, " must be a string or a list of text parts"));
}

void parse_common(const Json& j, const RequestLimits& limits, CompletionRequest& r) {
  if (j.contains("model") && !j["model"].is_null()) {
    if (!j["model"].is_string()) bad("model", "\"model\" must be a string");
    r.model = j["model"].get<std::string>();
  }
  r.temperature = number_in(j, "temperature", 0, 2, 1.0);
  r.top_p = number_in(j, "top_p", 0, 1, 1.0);
  if (r.top_p <= 0) bad("top_p", "\"top_p\" must be above 0 (use temperature 0 for greedy decoding)");
  r.top_k = static_cast<int>(integer_in(j, "top_k", -1, 1 << 20).value_or(0));
  if (r.top_k < 0) r.top_k = 0;  // vLLM's -1 = off
  auto max_tokens = integer_in(j, "max_completion_tokens", 1, 1 << 20);
  if (!max_tokens) max_tokens = integer_in(j, "max_tokens", 1, 1 << 20);
  if (max_tokens) r.max_tokens = static_cast<int>(*max_tokens);
  r.n = static_cast<int>(integer_in(j, "n", 1, limits.max_n).value_or(1));
  r.seed = integer_in(j, "seed", std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max());
  r.stream = bool_in(j, "stream");
  if (j.contains("stream_options") && !j["stream_options"].is_null()) {
    if (!j["stream_options"].is_object()) bad("stream_options", "\"stream_options\" must be an object");
    r.include_usage = bool_in(j["stream_options"], "include_usage");
  }
  if (j.contains("stop") && !j["stop"].is_null()) {
    const Json& s = j["stop"];
    if (s.is_string()) {
      r.stop.push_back(s.get<std::string>());
    } else if (s.is_array()) {
      for (const Json& x : s) {
        if (!x.is_string()) bad("stop", "\"stop\" must be a string or a list of strings");
        r.stop.push_back(x.get<std::string>());
      }
    } else {
      bad("stop", "\"stop\" must be a string or a list of strings");
    }
    if (r.stop.size() > static_cast<size_t>(limits.max_stop)) {
      bad("stop", str_cat("at most ", limits.max_stop, " stop strings"));
    }
    for (const auto& x : r.stop) {
      if (x.empty() || x.size() > limits.max_stop_bytes) {
        bad("stop", str_cat("each stop string must have 1 to ", limits.max_stop_bytes, " bytes"));
      }
    }
  }
  for (const char* key : {"logprobs", "tools", "functions", "response_format"}) {
    if (j.contains(key) && !j[key].is_null() && j[key] != false) {
      bad(key, str_cat("\"", key, "\" is not supported by this server"));
    }
  }
}

// The settings both endpoints share; `field` (messages or prompt) must be there.
CompletionRequest start_request(const Json& j, const RequestLimits& limits, bool chat) {
  CompletionRequest r;
  r.chat = chat;
  parse_common(j, limits, r);
  const char* field = chat ? "messages" : "prompt";
  if (!j.contains(field)) bad(field, str_cat("\"", field, "\" is required"));
  return r;
}

}  // namespace

CompletionRequest parse_chat_request(const std::string& body, const RequestLimits& limits) {
  const Json j = parse_body(body);
  CompletionRequest r = start_request(j, limits, /*chat=*/true);
  const Json& ms = j["messages"];
  if (!ms.is_array() || ms.empty()) bad("messages", "\"messages\" must be a non-empty list");
  for (size_t i = 0; i < ms.size(); ++i) {
    const Json& m = ms[i];
    if (!m.is_object()) bad(str_cat("messages[", i, "]"), str_cat("messages[", i, "] must be an object"));
    if (!m.contains("role") || !m["role"].is_string()) {
      bad(str_cat("messages[", i, "].role"), str_cat("messages[", i, "] needs a string \"role\""));
    }
    std::string role = m["role"].get<std::string>();
    if (role == "developer") role = "system";  // the newer name for system messages
    if (role != "system" && role != "user" && role != "assistant") {
      bad(str_cat("messages[", i, "].role"),
          str_cat("unknown role '", role, "' in messages[", i, "]: use system, user or assistant"));
    }
    r.messages.push_back({role, content_text(m, i)});
  }
  return r;
}

CompletionRequest parse_completion_request(const std::string& body, const RequestLimits& limits) {
  const Json j = parse_body(body);
  CompletionRequest r = start_request(j, limits, /*chat=*/false);
  const Json& p = j["prompt"];
  if (p.is_string()) {
    r.prompt = p.get<std::string>();
  } else if (p.is_array() && p.size() == 1 && p[0].is_string()) {
    r.prompt = p[0].get<std::string>();
  } else {
    bad("prompt", "\"prompt\" must be a string (or a list of one string)");
  }
  if (r.prompt.empty()) bad("prompt", "\"prompt\" is empty");
  return r;
}

Json usage_json(int64_t prompt_tokens, int64_t completion_tokens) {
  return {{"prompt_tokens", prompt_tokens},
          {"completion_tokens", completion_tokens},
          {"total_tokens", prompt_tokens + completion_tokens}};
}

Json completion_response(const CompletionRequest& request, const std::string& id, int64_t created,
                         const std::string& model, const Choices& c) {
  Json choices = Json::array();
  for (size_t i = 0; i < c.texts.size(); ++i) {
    Json choice = {{"index", i}, {"finish_reason", c.finish[i]}, {"logprobs", nullptr}};
    if (request.chat) {
      choice["message"] = {{"role", "assistant"}, {"content", c.texts[i]}};
    } else {
      choice["text"] = c.texts[i];
    }
    choices.push_back(std::move(choice));
  }
  return {{"id", id},
          {"object", request.chat ? "chat.completion" : "text_completion"},
          {"created", created},
          {"model", model},
          {"choices", std::move(choices)},
          {"usage", usage_json(c.prompt_tokens, c.completion_tokens)}};
}

Json stream_chunk(const CompletionRequest& request, const std::string& id, int64_t created, const std::string& model,
                  int index, const std::string& text, bool first, const std::string& finish) {
  Json choice = {{"index", index}, {"finish_reason", finish.empty() ? Json() : Json(finish)}, {"logprobs", nullptr}};
  if (request.chat) {
    Json delta = Json::object();
    if (first) delta["role"] = "assistant";
    if (!text.empty() || (first && finish.empty())) delta["content"] = text;
    choice["delta"] = std::move(delta);
  } else {
    choice["text"] = text;
  }
  return {{"id", id},
          {"object", request.chat ? "chat.completion.chunk" : "text_completion"},
          {"created", created},
          {"model", model},
          {"choices", Json::array({std::move(choice)})}};
}

size_t incomplete_utf8_tail(const std::string& s) {
  // Look back at most 3 bytes for a lead byte whose sequence runs past the end.
  const size_t n = s.size();
  for (size_t back = 1; back <= std::min<size_t>(3, n); ++back) {
    const auto c = static_cast<unsigned char>(s[n - back]);
    if ((c & 0xC0) == 0x80) continue;  // a continuation byte: keep looking
    const size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
    return need > back ? back : 0;
  }
  return 0;
}

std::string to_valid_utf8(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    size_t need = 0;
    uint32_t min = 0;
    if (c < 0x80) need = 1;
    else if (c >= 0xC2 && c < 0xE0) need = 2, min = 0x80;
    else if (c >= 0xE0 && c < 0xF0) need = 3, min = 0x800;
    else if (c >= 0xF0 && c < 0xF5) need = 4, min = 0x10000;
    bool ok = need > 0 && i + need <= s.size();
    uint32_t cp = need == 1 ? c : need == 2 ? (c & 0x1F) : need == 3 ? (c & 0x0F) : (c & 0x07);
    for (size_t k = 1; ok && k < need; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      ok = (cc & 0xC0) == 0x80;
      cp = (cp << 6) | (cc & 0x3F);
    }
    ok = ok && cp >= min && cp <= 0x10FFFF && !(cp >= 0xD800 && cp <= 0xDFFF);
    if (ok) {
      out.append(s.substr(i, need));
      i += need;
    } else {
      out += "\xEF\xBF\xBD";
      i += 1;
    }
  }
  return out;
}

std::string ReplyDecoder::release(std::string raw) {
  text_ += raw;
  std::string clean = to_valid_utf8(raw);
  sent_ += clean;
  return clean;
}

ReplyDecoder::ReplyDecoder(const Tokenizer& tokenizer, std::vector<std::string> stop)
    : tokenizer_(&tokenizer), stop_(std::move(stop)) {
  for (const auto& s : stop_) longest_stop_ = std::max(longest_stop_, s.size());
}

std::string ReplyDecoder::push(int32_t token) {
  if (stopped_) return {};
  ++tokens_;
  decoded_ += tokenizer_->decode({token}, /*skip_special=*/true);
  const std::string& full = decoded_;
  // A stop string may end in the new text or straddle what was held back.
  const size_t from = text_.size() > longest_stop_ ? text_.size() - longest_stop_ : 0;
  size_t cut = std::string::npos;
  for (const auto& s : stop_) cut = std::min(cut, full.find(s, from));
  if (cut != std::string::npos) {
    stopped_ = true;
    return release(cut > text_.size() ? full.substr(text_.size(), cut - text_.size()) : std::string());
  }
  size_t safe = full.size() - incomplete_utf8_tail(full);
  if (longest_stop_ > 1) safe = safe > longest_stop_ - 1 ? std::min(safe, full.size() - (longest_stop_ - 1)) : 0;
  if (safe <= text_.size()) return {};
  return release(full.substr(text_.size(), safe - text_.size()));
}

std::string ReplyDecoder::finish() {
  if (stopped_) return {};
  return release(decoded_.size() > text_.size() ? decoded_.substr(text_.size()) : std::string());
}

}  // namespace rlhf::serve
