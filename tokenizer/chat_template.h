// The chat template: how a conversation becomes tokens, the same way in SFT,
// generation, the rater tool, the reward model and the server.
//
// The template is the Jinja source a tokenizer carries (tokenizer_config.json
// "chat_template", or --chat_template FILE), rendered by our Jinja subset
// (tokenizer/jinja.h) exactly as transformers' apply_chat_template renders
// it. A tokenizer without one uses ours (special::kChatTemplate):
//
//   <|endoftext|><|system|>{system}<|end|><|user|>{user}<|end|><|assistant|>{reply}<|end|>...
//
// The rendered text becomes ids with the special tokens the template writes
// read as their ids, while text that comes from a message stays text: a
// message that spells "<|im_end|>" cannot forge a turn.
//
// What SFT learns (the assistant mask) comes from rendering, not from
// per-family code: the template's {% generation %} blocks if it has them;
// otherwise, for each assistant turn, the text after the rendering of the
// conversation before it with add_generation_prompt, up to the end-of-turn
// token. That token is found by rendering a probe conversation.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "common/config.h"
#include "tokenizer/jinja.h"
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
  std::vector<uint8_t> loss_mask;  // 1 on the assistant's turns, their end-of-turn token included
};

// Makes `tokenizer` ready for chat: the template in `template_file` (if not
// empty) replaces its own, and `special_tokens` it writes are added; a
// tokenizer with no template gets ours and our role markers. Grow the
// model's vocabulary to match.
void prepare_chat_tokenizer(Tokenizer& tokenizer, const std::string& template_file = "",
                            const std::vector<std::string>& special_tokens = {});

class ChatTemplate {
 public:
  // Fails, naming the construct, if the tokenizer's template is outside our
  // Jinja subset, or if the tokenizer has no template and lacks our markers.
  explicit ChatTemplate(const Tokenizer& tokenizer);

  // The template's text for a conversation (what apply_chat_template(...,
  // tokenize=False) returns). A template's raise_exception() is an error.
  std::string render_text(const Conversation& conversation, bool add_generation_prompt) const;
  ChatTokens render(const Conversation& conversation) const;
  // The conversation rendered with the generation prompt: what the model continues.
  std::vector<int32_t> render_prompt(const Conversation& conversation) const;
  // Decodes a generated reply: text up to the first stop token, special tokens left out.
  std::string decode_reply(const std::vector<int32_t>& ids) const;

  // The token that closes an assistant turn (e.g. <|im_end|>, <|eot_id|>, <|end|>).
  int32_t end_of_turn() const { return end_of_turn_; }
  // Generation stops on any of these: the end of turn, the tokenizer's
  // eos_token and every eos_token_id of the checkpoint.
  const std::vector<int32_t>& stop_tokens() const { return stops_; }
  // Fills batches past the end of a sequence (pad_token, else the end of turn).
  int32_t pad_id() const { return pad_; }
  const Tokenizer& tokenizer() const { return tokenizer_; }

 private:
  struct Span {
    size_t begin, end;
  };
  Json context(const Conversation& conversation, bool add_generation_prompt) const;
  // Ids of `text` with the special tokens outside `text_ranges` read as
  // special; a token is masked when its piece lies in one of `learn`.
  ChatTokens encode(const std::string& text, const std::vector<Span>& text_ranges,
                    const std::vector<Span>& learn) const;
  // Where each message's text appears in `text`, searching in order from
  // starts[i] (if given); {npos, npos} for one the template did not print.
  std::vector<Span> content_ranges(const std::string& text, const Conversation& conversation,
                                   const std::vector<size_t>& starts) const;

  const Tokenizer& tokenizer_;
  jinja::Template template_;
  std::vector<std::pair<std::string, int32_t>> specials_;  // longest text first
  std::array<bool, 256> special_start_{};                 // first bytes of specials_
  int32_t end_of_turn_ = -1;
  int32_t pad_ = -1;
  std::vector<int32_t> stops_;
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
