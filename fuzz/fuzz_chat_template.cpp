// Chat templates come with a user's model (tokenizer_config.json): any
// bytes as a Jinja template, compiled and rendered on a small conversation.
// An unsupported construct or a failing template is an rlhf::Error.
#include <string>

#include "common/config.h"
#include "common/error.h"
#include "tokenizer/jinja.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const rlhf::Json context = {
      {"messages",
       rlhf::Json::array({{{"role", "system"}, {"content", "Be brief."}},
                          {{"role", "user"}, {"content", "Where is my order?"}},
                          {{"role", "assistant"}, {"content", "It shipped."}}})},
      {"add_generation_prompt", true},
      {"bos_token", "<s>"},
      {"eos_token", "</s>"}};
  try {
    rlhf::jinja::Template t(std::string(reinterpret_cast<const char*>(data), size), "fuzz.jinja");
    t.render(context);
  } catch (const rlhf::Error&) {
  }
  return 0;
}
