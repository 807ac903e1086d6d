// Reader and writer for the safetensors format (Hugging Face): an 8-byte
// little-endian header length, a JSON header of {name: {dtype, shape,
// data_offsets}}, then the raw bytes. The reader validates everything before
// touching the data (sizes, dtypes, offsets in bounds, no overlaps), so a
// truncated or corrupted file is a clear rlhf::Error, never a crash.
#pragma once

#include <torch/types.h>

#include <map>
#include <memory>
#include <string>

#include "common/fs.h"

namespace rlhf {

using TensorMap = std::map<std::string, torch::Tensor>;
using Metadata = std::map<std::string, std::string>;

struct SafetensorsFile {
  TensorMap tensors;
  Metadata metadata;  // the optional "__metadata__" entry
};

// Tensors are written contiguous, in name order; the write is atomic.
void save_safetensors(const std::string& path, const TensorMap& tensors,
                      const Metadata& metadata = {});
SafetensorsFile load_safetensors(const std::string& path);
// Same, from bytes in memory; `source` names them in errors.
// With `owner`, tensors whose bytes are aligned view them where they lie
// (the mapping lives while a tensor does) instead of copying.
SafetensorsFile parse_safetensors(const uint8_t* data, size_t size, const std::string& source,
                                  std::shared_ptr<const MappedFile> owner = nullptr);

}  // namespace rlhf
