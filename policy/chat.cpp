#include "policy/chat.h"

#include "common/error.h"
#include "common/jsonl.h"

namespace rlhf {

ChatTemplate::ChatTemplate(const Tokenizer& tokenizer)
    : tokenizer_(tokenizer),
      eot_(tokenizer.special_id(special::kEndOfText)),
      system_(tokenizer.special_id(special::kSystem)),
      user_(tokenizer.special_id(special::kUser)),
      assistant_(tokenizer.special_id(special::kAssistant)),
      end_(tokenizer.special_id(special::kEndOfTurn)) {}

int32_t ChatTemplate::role_id(const std::string& role) const {
  if (role == "system") return system_;
  if (role == "user") return user_;
  if (role == "assistant") return assistant_;
  fail(ErrorKind::kData, "unknown chat role '", role, "'; use system, user or assistant");
}

ChatTokens ChatTemplate::render(const Conversation& conversation) const {
  ChatTokens out;
  auto push = [&](int32_t id, uint8_t m) {
    out.ids.push_back(id);
    out.loss_mask.push_back(m);
  };
  push(eot_, 0);
  for (const ChatMessage& m : conversation) {
    const uint8_t learn = m.role == "assistant" ? 1 : 0;
    push(role_id(m.role), 0);
    for (int32_t id : tokenizer_.encode(m.content)) push(id, learn);
    push(end_, learn);  // learning to stop is part of the reply
  }
  return out;
}

std::vector<int32_t> ChatTemplate::render_prompt(const Conversation& conversation) const {
  std::vector<int32_t> ids = render(conversation).ids;
  ids.push_back(assistant_);
  return ids;
}

Conversation ChatTemplate::parse(const std::vector<int32_t>& ids) const {
  Conversation out;
  size_t i = 0;
  if (i < ids.size() && ids[i] == eot_) ++i;
  while (i < ids.size()) {
    std::string role;
    if (ids[i] == system_) role = "system";
    else if (ids[i] == user_) role = "user";
    else if (ids[i] == assistant_) role = "assistant";
    else fail(ErrorKind::kData, "chat tokens: expected a role marker at position ", i);
    std::vector<int32_t> content;
    for (++i; i < ids.size() && ids[i] != end_; ++i) content.push_back(ids[i]);
    if (i == ids.size()) fail(ErrorKind::kData, "chat tokens: the ", role, " turn has no <|end|>");
    ++i;
    out.push_back({role, tokenizer_.decode(content)});
  }
  return out;
}

std::string ChatTemplate::decode_reply(const std::vector<int32_t>& ids) const {
  std::vector<int32_t> content;
  for (int32_t id : ids) {
    if (id == end_ || id == eot_) break;
    content.push_back(id);
  }
  return tokenizer_.decode(content, /*skip_special=*/true);
}

Conversation conversation_from_json(const Json& obj, const std::string& path, size_t line,
                                    bool need_assistant) {
  auto it = obj.find("messages");
  if (it == obj.end()) jsonl_error(path, line, "missing the field \"messages\" (a list of {\"role\", \"content\"})");
  if (!it->is_array()) jsonl_error(path, line, "\"messages\" must be a list of {\"role\", \"content\"} objects");
  Conversation out;
  bool has_assistant = false;
  for (size_t i = 0; i < it->size(); ++i) {
    const Json& m = (*it)[i];
    if (!m.is_object() || !m.contains("role") || !m.contains("content") || !m["role"].is_string() ||
        !m["content"].is_string()) {
      jsonl_error(path, line, str_cat("messages[", i, "] must be {\"role\": string, \"content\": string}"));
    }
    const std::string role = m["role"].get<std::string>();
    if (role != "system" && role != "user" && role != "assistant") {
      jsonl_error(path, line, str_cat("messages[", i, "] has the unknown role \"", role,
                                      "\"; use \"system\", \"user\" or \"assistant\""));
    }
    has_assistant |= role == "assistant";
    out.push_back({role, m["content"].get<std::string>()});
  }
  if (out.empty()) jsonl_error(path, line, "\"messages\" is empty");
  if (need_assistant && !has_assistant) {
    jsonl_error(path, line, "the conversation has no assistant turn, so there is nothing to learn from it");
  }
  return out;
}

Json conversation_to_json(const Conversation& conversation) {
  Json out = Json::array();
  for (const auto& m : conversation) out.push_back({{"role", m.role}, {"content", m.content}});
  return out;
}

Conversation prompt_from_json(const Json& obj, const std::string& path, size_t line,
                              const std::string& default_system) {
  if (obj.contains("prompt") && obj["prompt"].is_string()) {
    Conversation c;
    if (!default_system.empty()) c.push_back({"system", default_system});
    c.push_back({"user", obj["prompt"].get<std::string>()});
    return c;
  }
  Conversation c;
  if (obj.contains("prompt") && obj["prompt"].is_array()) {
    c = conversation_from_json(Json{{"messages", obj["prompt"]}}, path, line, false);
  } else if (obj.contains("messages")) {
    c = conversation_from_json(obj, path, line, false);
  } else {
    jsonl_error(path, line, "expected \"prompt\" (a string or a list of messages) or \"messages\"");
  }
  if (c.back().role != "user") {
    jsonl_error(path, line, "a prompt must end with a user turn (the model writes the next assistant turn)");
  }
  return c;
}

}  // namespace rlhf
