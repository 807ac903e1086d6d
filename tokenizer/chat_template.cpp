#include "tokenizer/chat_template.h"

#include <algorithm>

#include "common/error.h"
#include "common/fs.h"
#include "common/jsonl.h"

namespace rlhf {

void prepare_chat_tokenizer(Tokenizer& tokenizer, const std::string& template_file,
                            const std::vector<std::string>& special_tokens) {
  tokenizer.add_special_tokens(special_tokens);
  TokenizerConfig config = tokenizer.config();
  if (!template_file.empty()) {
    if (!path_exists(template_file)) {
      fail(ErrorKind::kIo, "chat_template: no file '", template_file, "'; give a Jinja file or leave it empty");
    }
    config.chat_template = read_file(template_file);
    jinja::Template check(config.chat_template, template_file);  // an unsupported construct fails now
  }
  if (config.chat_template.empty()) {
    tokenizer.add_special_tokens(special::defaults());
    config.chat_template = special::kChatTemplate;
  }
  tokenizer.set_config(std::move(config));
}

namespace {

const std::string& template_source(const Tokenizer& tokenizer) {
  static const std::string ours = special::kChatTemplate;
  return tokenizer.config().chat_template.empty() ? ours : tokenizer.config().chat_template;
}

bool is_ours(const Tokenizer& tokenizer) { return template_source(tokenizer) == special::kChatTemplate; }

}  // namespace

ChatTemplate::ChatTemplate(const Tokenizer& tokenizer)
    : tokenizer_(tokenizer), template_(template_source(tokenizer), "chat template") {
  if (is_ours(tokenizer)) {
    for (const auto& name : special::defaults()) tokenizer.special_id(name);  // a clear error if one is missing
  }
  for (const auto& name : tokenizer.special_tokens()) specials_.emplace_back(name, tokenizer.find_special(name));
  std::stable_sort(specials_.begin(), specials_.end(),
                   [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });
  for (const auto& [name, id] : specials_) {
    if (!name.empty()) special_start_[static_cast<unsigned char>(name[0])] = true;
  }

  // The end-of-turn token: the first special token after an assistant's reply
  // in a probe conversation. A template that refuses the probe falls back to
  // the tokenizer's eos_token below.
  try {
    const Conversation probe = {{"user", "Hi"}, {"assistant", "PROBE"}};
    const std::string prompt = render_text({probe[0]}, true);
    const std::string text = render_text(probe, false);
    const size_t at = text.find("PROBE", std::min(prompt.size(), text.size()));
    for (size_t i = at == std::string::npos ? text.size() : at + 5; i < text.size() && end_of_turn_ < 0; ++i) {
      for (const auto& [name, id] : specials_) {
        if (text.compare(i, name.size(), name) == 0) {
          end_of_turn_ = id;
          break;
        }
      }
    }
  } catch (const Error&) {
  }
  const TokenizerConfig& config = tokenizer.config();
  const int32_t eos = tokenizer.token_id(config.eos_token);
  if (end_of_turn_ < 0) end_of_turn_ = eos;
  if (end_of_turn_ < 0) {
    fail(ErrorKind::kData, "the chat template writes no special token after an assistant's reply and the tokenizer "
         "names no eos_token, so a reply would never end; set \"eos_token\" in tokenizer_config.json");
  }
  std::vector<int32_t> stops = {end_of_turn_, eos};
  if (is_ours(tokenizer)) stops.push_back(tokenizer.special_id(special::kEndOfText));
  stops.insert(stops.end(), config.eos_token_ids.begin(), config.eos_token_ids.end());
  for (int32_t id : stops) {
    if (id >= 0 && std::find(stops_.begin(), stops_.end(), id) == stops_.end()) stops_.push_back(id);
  }
  pad_ = tokenizer.token_id(config.pad_token);
  if (pad_ < 0 && is_ours(tokenizer)) pad_ = tokenizer.special_id(special::kEndOfText);
  if (pad_ < 0) pad_ = eos >= 0 ? eos : end_of_turn_;
}

Json ChatTemplate::context(const Conversation& conversation, bool add_generation_prompt) const {
  const TokenizerConfig& config = tokenizer_.config();
  Json c = Json::object();
  // transformers passes the special tokens that are set (special_tokens_map).
  for (const auto& [key, value] : {std::pair<const char*, const std::string*>{"bos_token", &config.bos_token},
                                   {"eos_token", &config.eos_token},
                                   {"unk_token", &config.unk_token},
                                   {"pad_token", &config.pad_token}}) {
    if (!value->empty()) c[key] = *value;
  }
  Json messages = Json::array();
  for (const auto& m : conversation) messages.push_back({{"role", m.role}, {"content", m.content}});
  c["messages"] = std::move(messages);
  c["add_generation_prompt"] = add_generation_prompt;
  c["tools"] = nullptr;
  c["documents"] = nullptr;
  return c;
}

std::string ChatTemplate::render_text(const Conversation& conversation, bool add_generation_prompt) const {
  return template_.render(context(conversation, add_generation_prompt)).text;
}

std::vector<ChatTemplate::Span> ChatTemplate::content_ranges(const std::string& text, const Conversation& conversation,
                                                             const std::vector<size_t>& starts) const {
  std::vector<Span> out;
  size_t cursor = 0;
  for (size_t i = 0; i < conversation.size(); ++i) {
    const ChatMessage& m = conversation[i];
    if (i < starts.size()) cursor = std::max(cursor, starts[i]);
    std::string content = m.content;
    size_t at = content.empty() ? std::string::npos : text.find(content, cursor);
    if (at == std::string::npos) {  // templates often trim what they print
      const size_t b = content.find_first_not_of(" \t\r\n"), e = content.find_last_not_of(" \t\r\n");
      content = b == std::string::npos ? "" : content.substr(b, e - b + 1);
      at = content.empty() ? std::string::npos : text.find(content, cursor);
    }
    if (at == std::string::npos) {
      out.push_back({std::string::npos, std::string::npos});
      continue;
    }
    out.push_back({at, at + content.size()});
    cursor = at + content.size();
  }
  return out;
}

ChatTokens ChatTemplate::encode(const std::string& text, const std::vector<Span>& text_ranges,
                                const std::vector<Span>& learn) const {
  ChatTokens out;
  auto learned = [&](size_t pos) {
    for (const Span& s : learn) {
      if (pos >= s.begin && pos < s.end) return uint8_t{1};
    }
    return uint8_t{0};
  };
  std::vector<size_t> cuts;  // pieces never straddle the edge of a learned span
  for (const Span& s : learn) {
    cuts.push_back(s.begin);
    cuts.push_back(s.end);
  }
  std::sort(cuts.begin(), cuts.end());
  size_t piece = 0;
  auto flush = [&](size_t end) {
    if (end <= piece) return;
    const uint8_t m = learned(piece);
    for (int32_t id : tokenizer_.encode(std::string_view(text).substr(piece, end - piece))) {
      out.ids.push_back(id);
      out.loss_mask.push_back(m);
    }
    piece = end;
  };
  size_t cut = 0;
  for (size_t i = 0; i < text.size();) {
    while (cut < cuts.size() && cuts[cut] <= i) {
      flush(std::max(piece, std::min(cuts[cut], i)));
      ++cut;
    }
    bool in_text = false;
    for (const Span& r : text_ranges) {
      if (r.begin != std::string::npos && i >= r.begin && i < r.end) {
        // Message text stays text; jump to its end (or the next cut inside it).
        i = cut < cuts.size() ? std::min(r.end, std::max(cuts[cut], i + 1)) : r.end;
        in_text = true;
        break;
      }
    }
    if (in_text) continue;
    bool matched = false;
    if (!special_start_[static_cast<unsigned char>(text[i])]) {
      ++i;
      continue;
    }
    for (const auto& [name, id] : specials_) {
      if (text.compare(i, name.size(), name) == 0) {
        flush(i);
        out.ids.push_back(id);
        out.loss_mask.push_back(learned(i));
        i += name.size();
        piece = i;
        matched = true;
        break;
      }
    }
    if (!matched) ++i;
  }
  while (cut < cuts.size()) flush(std::min(cuts[cut++], text.size()));
  flush(text.size());
  return out;
}

ChatTokens ChatTemplate::render(const Conversation& conversation) const {
  const jinja::Rendered full = template_.render(context(conversation, false));
  const std::string& text = full.text;
  std::vector<Span> learn;
  if (template_.has_generation_tags()) {
    for (const auto& [b, e] : full.generation) learn.push_back({b, e});
    return encode(text, content_ranges(text, conversation, {}), learn);
  }
  // Where each assistant turn starts: after the rendering of the conversation
  // before it with the generation prompt (what the model sees when it replies).
  std::vector<size_t> starts(conversation.size(), 0);
  for (size_t i = 0; i < conversation.size(); ++i) {
    if (conversation[i].role != "assistant") continue;
    const std::string before = render_text({conversation.begin(), conversation.begin() + static_cast<long>(i)}, true);
    if (text.compare(0, before.size(), before) != 0) {
      fail(ErrorKind::kData, "the chat template renders the conversation before assistant turn ", i + 1,
           " (with add_generation_prompt) differently from the start of the whole conversation, so the reply "
           "cannot be told apart; use a template with {% generation %} blocks (--chat_template FILE)");
    }
    starts[i] = before.size();
  }
  // Each turn ends with the end-of-turn token after its text (if the
  // template writes one before the next message).
  const std::vector<Span> contents = content_ranges(text, conversation, starts);
  const std::string end_text = tokenizer_.decode({end_of_turn_});
  for (size_t i = 0; i < conversation.size(); ++i) {
    if (conversation[i].role != "assistant") continue;
    size_t end = std::max(starts[i], contents[i].begin == std::string::npos ? 0 : contents[i].end);
    const size_t marker = text.find(end_text, end);
    const size_t next = i + 1 < conversation.size() && contents[i + 1].begin != std::string::npos
                            ? contents[i + 1].begin : text.size();
    if (marker != std::string::npos && marker < next) end = marker + end_text.size();
    learn.push_back({starts[i], end});
  }
  return encode(text, contents, learn);
}

std::vector<int32_t> ChatTemplate::render_prompt(const Conversation& conversation) const {
  const std::string text = render_text(conversation, true);
  return encode(text, content_ranges(text, conversation, {}), {}).ids;
}

std::string ChatTemplate::decode_reply(const std::vector<int32_t>& ids) const {
  std::vector<int32_t> content;
  for (int32_t id : ids) {
    if (std::find(stops_.begin(), stops_.end(), id) != stops_.end()) break;
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
