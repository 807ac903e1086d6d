// TOML configs: any bytes through the TOML reader and into a typed config
// (the label service's, with nested sections, strings, numbers with ranges
// and flags). Bad input is an rlhf::Error naming the key.
#include <string>

#include "common/config.h"
#include "common/error.h"
#include "labels/service.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    const rlhf::Json tree = rlhf::toml_string_to_json(text, "fuzz.toml");
    rlhf::labels::ServiceConfig config;
    rlhf::config_from_json(tree, "fuzz.toml", config);
    rlhf::json_to_toml(rlhf::config_to_json(config));
  } catch (const rlhf::Error&) {
  }
  return 0;
}
