// The safetensors header (Hugging Face's format, without LibTorch): an
// 8-byte little-endian length, then a JSON object {name: {dtype, shape,
// data_offsets}} with an optional "__metadata__" of strings, then the data.
// Everything is checked before any byte of data is touched: the length, the
// JSON (nesting capped), each dtype, shape and offsets (in bounds, sized for
// the shape, no overlaps). A truncated or damaged file is an Error naming it,
// never a crash. train/safetensors.h turns the entries into tensors.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace rlhf {

struct SafetensorsEntry {
  std::string name;
  std::string dtype;           // "F32", "BF16", "I64", ...
  size_t dtype_size = 0;       // bytes per element
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0; // byte range within the data section
};

struct SafetensorsHeader {
  std::vector<SafetensorsEntry> tensors;  // in the header's order
  std::map<std::string, std::string> metadata;
  uint64_t data_offset = 0;               // where the data section starts in the file
  uint64_t data_size = 0;
};

// Bytes per element of a safetensors dtype name, 0 for one we do not read.
size_t safetensors_dtype_size(const std::string& dtype);

// Parses and checks the header of the `size` bytes at `data`; `source`
// names them in errors (ErrorKind::kCorrupt).
SafetensorsHeader parse_safetensors_header(const uint8_t* data, size_t size, const std::string& source);

}  // namespace rlhf
