#include "policy/chat.h"

#include "common/error.h"

namespace rlhf {

std::vector<ChatReply> decode_replies(const ChatTemplate& chat, const torch::Tensor& tokens,
                                      const torch::Tensor& lengths, const torch::Tensor& finished) {
  const torch::Tensor t = tokens.to(torch::kCPU, torch::kLong).contiguous();
  const torch::Tensor n = lengths.to(torch::kCPU, torch::kLong).contiguous();
  const torch::Tensor f = finished.to(torch::kCPU, torch::kBool).contiguous();
  const auto ta = t.accessor<int64_t, 2>();
  const auto na = n.accessor<int64_t, 1>();
  const auto fa = f.accessor<bool, 1>();
  std::vector<ChatReply> out;
  out.reserve(static_cast<size_t>(t.size(0)));
  for (int64_t r = 0; r < t.size(0); ++r) {
    std::vector<int32_t> ids(static_cast<size_t>(na[r]));
    for (int64_t j = 0; j < na[r]; ++j) ids[static_cast<size_t>(j)] = static_cast<int32_t>(ta[r][j]);
    out.push_back({chat.decode_reply(ids), fa[r], na[r]});
  }
  return out;
}

LoadedPolicy load_chat_policy(const std::string& path, torch::Device device) {
  LoadedPolicy p = load_policy(resolve_checkpoint(path, /*prefer_best=*/true), device);
  prepare_chat_tokenizer(p.tokenizer);
  if (p.tokenizer.vocab_size() > p.model->config().vocab_size) {
    fail(ErrorKind::kData, p.dir, ": the tokenizer has no chat tokens; fine-tune this model with `rlhf sft` first");
  }
  return p;
}

}  // namespace rlhf
