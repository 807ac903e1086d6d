// The tokenizer on any text: a byte-level BPE gives the text back exactly
// (decode(encode(x)) == x, special-token spellings included); the Llama 2
// and Qwen 3 tokenizers from .deps, when set up, encode and decode anything.
// The rendered chat template of a conversation holding the text is checked
// too: user text never becomes a turn marker.
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/fs.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

using namespace rlhf;

namespace {

struct Tokenizers {
  Tokenizer bpe;
  std::vector<Tokenizer> others;
  std::unique_ptr<ChatTemplate> chat;
  Tokenizers() {
    TokenizerTrainOptions o;
    o.vocab_size = 400;
    bpe = Tokenizer::train({"Where is my order? It shipped on Monday.", "Thank you! Your refund is on its way.",
                            "I'm sorry the fan arrived damaged; a replacement ships today."},
                           o);
    prepare_chat_tokenizer(bpe);
    chat = std::make_unique<ChatTemplate>(bpe);
    for (const char* dir : {"/.deps/llama2-tokenizer/models", "/.deps/qwen3-tokenizer/models"}) {
      const std::string path = std::string(RLHF_SOURCE_DIR) + dir;
      if (path_exists(path + "/tokenizer.json")) others.push_back(Tokenizer::load(path));
    }
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Tokenizers t;
  const std::string text(reinterpret_cast<const char*>(data), size);
  const std::vector<int32_t> ids = t.bpe.encode(text);
  for (int32_t id : ids)
    if (id < 0 || id >= t.bpe.vocab_size() || t.bpe.is_special(id)) std::abort();
  if (t.bpe.decode(ids) != text) std::abort();
  const ChatTokens rendered = t.chat->render({{"user", text}, {"assistant", text}});
  size_t ends = 0;
  for (int32_t id : rendered.ids) ends += id == t.chat->end_of_turn();
  if (ends != 2) std::abort();  // one per turn: the text added none
  for (const Tokenizer& other : t.others) {
    const std::vector<int32_t> o = other.encode(text);
    other.decode(o);
  }
  return 0;
}
