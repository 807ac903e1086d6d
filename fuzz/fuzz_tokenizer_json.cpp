// Reading a user's tokenizer: any bytes as tokenizer.json (with our
// tokenizer_config.json beside it). Loading gives a tokenizer that encodes
// and decodes, or an rlhf::Error naming the file.
#include <unistd.h>

#include <string>

#include "common/error.h"
#include "common/fs.h"
#include "tokenizer/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string dir = "/tmp/rlhf-fuzz-tokenizer-" + std::to_string(::getpid());
  static const bool made = (rlhf::make_dirs(dir), true);
  (void)made;
  rlhf::write_file_atomic(dir + "/tokenizer.json", std::string(reinterpret_cast<const char*>(data), size));
  try {
    const rlhf::Tokenizer t = rlhf::Tokenizer::load(dir);
    t.decode(t.encode("Hello, world! <|endoftext|> 123 é 日本"));
  } catch (const rlhf::Error&) {
  }
  return 0;
}
