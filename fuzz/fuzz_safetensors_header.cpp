// The safetensors header reader (what every model load and checkpoint resume
// runs first): any bytes are a checked header or an rlhf::Error, and what it
// accepts lies inside the file.
#include <cstdlib>

#include "common/error.h"
#include "common/safetensors_header.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const rlhf::SafetensorsHeader h = rlhf::parse_safetensors_header(data, size, "fuzz.safetensors");
    if (h.data_offset + h.data_size != size) std::abort();
    for (const auto& t : h.tensors)
      if (t.begin > t.end || t.end > h.data_size) std::abort();
  } catch (const rlhf::Error&) {
  }
  return 0;
}
