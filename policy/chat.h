// The chat template: how a conversation becomes tokens, the same way in SFT,
// generation, the rater tool and the reward model.
//
//   <|endoftext|><|system|>{system}<|end|><|user|>{user}<|end|><|assistant|>{reply}<|end|>...
//
// Role markers and <|end|> are special tokens that plain text cannot produce,
// so a message can never forge a turn. A prompt for generation ends with
// <|assistant|>; the reply ends at <|end|>.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/config.h"
#include "tokenizer/tokenizer.h"

namespace rlhf {

struct ChatMessage {
  std::string role;  // "system", "user" or "assistant"
  std::string content;
  bool operator==(const ChatMessage& o) const { return role == o.role && content == o.content; }
};
using Conversation = std::vector<ChatMessage>;

struct ChatTokens {
  std::vector<int32_t> ids;
  std::vector<uint8_t> loss_mask;  // 1 on assistant content and its <|end|>
};

class ChatTemplate {
 public:
  // The tokenizer must hold the chat special tokens (ours always do).
  explicit ChatTemplate(const Tokenizer& tokenizer);

  ChatTokens render(const Conversation& conversation) const;
  // The conversation followed by <|assistant|>: what the model continues.
  std::vector<int32_t> render_prompt(const Conversation& conversation) const;
  // Inverse of render(): recovers the messages from ids. A turn without its
  // <|end|> is an error.
  Conversation parse(const std::vector<int32_t>& ids) const;
  // Decodes a generated reply: text up to the first <|end|>/<|endoftext|>.
  std::string decode_reply(const std::vector<int32_t>& ids) const;

  int32_t end_of_turn() const { return end_; }
  int32_t end_of_text() const { return eot_; }
  std::vector<int32_t> stop_tokens() const { return {end_, eot_}; }
  const Tokenizer& tokenizer() const { return tokenizer_; }

 private:
  int32_t role_id(const std::string& role) const;
  const Tokenizer& tokenizer_;
  int32_t eot_, system_, user_, assistant_, end_;
};

// Reads {"messages": [{"role", "content"}, ...]} (one JSONL line). Errors
// name the file and line: not an object, no "messages", an unknown role, an
// empty conversation, or (when `need_assistant`) no assistant turn.
Conversation conversation_from_json(const Json& obj, const std::string& path, size_t line,
                                    bool need_assistant);
Json conversation_to_json(const Conversation& conversation);

// A prompt record ({"prompt": "text"}, {"prompt": [messages]} or
// {"messages": [...]}) as a conversation ending with a user turn; a plain
// string becomes a user turn after `default_system` (if not empty).
Conversation prompt_from_json(const Json& obj, const std::string& path, size_t line,
                              const std::string& default_system);

}  // namespace rlhf
