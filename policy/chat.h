// Chatting with a policy: loading one with its chat template's tokens, and
// decoding a generated batch into replies. The template itself (how a
// conversation becomes tokens) is tokenizer/chat_template.h.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "policy/checkpoint.h"
#include "tokenizer/chat_template.h"

namespace rlhf {

// A generated reply, decoded.
struct ChatReply {
  std::string text;     // without its end-of-turn token
  bool finished;        // ended with a stop token (not cut off at the limit)
  int64_t tokens;       // tokens generated, the stop token included
};

// A policy to chat with, from a checkpoint or a run folder (its best
// checkpoint): the model and its tokenizer with the chat tokens. The system
// prompt it was trained with is trainer_state["system_prompt"]. Without chat
// tokens in the model's vocabulary, an error names the folder and says to
// run SFT first.
LoadedPolicy load_chat_policy(const std::string& path, torch::Device device = torch::kCPU);

// Every row of a generated batch, decoded in one pass: tokens [B, N],
// lengths [B] and finished [B] as generate() returns them.
std::vector<ChatReply> decode_replies(const ChatTemplate& chat, const torch::Tensor& tokens,
                                      const torch::Tensor& lengths, const torch::Tensor& finished);

}  // namespace rlhf
