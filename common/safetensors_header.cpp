#include "common/safetensors_header.h"

#include <algorithm>
#include <string_view>

#include "common/config.h"
#include "common/error.h"

namespace rlhf {
namespace {

constexpr uint64_t kMaxHeader = 100ull << 20;  // as the reference implementation

}  // namespace

size_t safetensors_dtype_size(const std::string& dtype) {
  static const std::pair<const char*, size_t> kSizes[] = {
      {"F64", 8}, {"F32", 4}, {"F16", 2}, {"BF16", 2}, {"I64", 8},
      {"I32", 4}, {"I16", 2}, {"I8", 1},  {"U8", 1},   {"BOOL", 1},
  };
  for (const auto& [name, size] : kSizes)
    if (dtype == name) return size;
  return 0;
}

SafetensorsHeader parse_safetensors_header(const uint8_t* data, size_t size, const std::string& source) {
  auto corrupt = [&](auto&&... what) {
    fail(ErrorKind::kCorrupt, source, ": not a valid safetensors file: ", what...,
         ". The file may be truncated or damaged; restore it from another checkpoint.");
  };
  if (size < 8) corrupt("it is ", size, " bytes long, shorter than the 8-byte header length");
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= static_cast<uint64_t>(data[i]) << (8 * i);
  if (n > kMaxHeader) corrupt("the header claims ", n, " bytes (limit ", kMaxHeader, ")");
  if (n > size - 8) corrupt("the header claims ", n, " bytes but only ", size - 8, " follow");
  Json header;
  try {
    header = parse_json(std::string_view(reinterpret_cast<const char*>(data + 8), n), source + " (header)");
  } catch (const nlohmann::json::exception& e) {
    corrupt("the header is not valid JSON (", e.what(), ")");
  }
  if (!header.is_object()) corrupt("the header is not a JSON object");

  SafetensorsHeader out;
  out.data_offset = 8 + n;
  out.data_size = size - 8 - n;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const Json& e = it.value();
    if (name == "__metadata__") {
      if (!e.is_object()) corrupt("__metadata__ is not an object");
      for (auto m = e.begin(); m != e.end(); ++m) {
        if (!m.value().is_string()) corrupt("__metadata__ value '", m.key(), "' is not a string");
        out.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    if (!e.is_object() || !e.contains("dtype") || !e.contains("shape") || !e.contains("data_offsets")) {
      corrupt("tensor '", name, "' lacks dtype, shape or data_offsets");
    }
    SafetensorsEntry entry;
    entry.name = name;
    if (e["dtype"].is_string()) entry.dtype = e["dtype"].get<std::string>();
    entry.dtype_size = safetensors_dtype_size(entry.dtype);
    if (entry.dtype_size == 0) corrupt("tensor '", name, "' has an unsupported dtype ", e["dtype"].dump());
    uint64_t numel = 1;
    if (!e["shape"].is_array()) corrupt("tensor '", name, "' has a shape that is not a list");
    for (const auto& dim : e["shape"]) {
      if (!dim.is_number_unsigned()) corrupt("tensor '", name, "' has a bad dimension ", dim.dump());
      const uint64_t v = dim.get<uint64_t>();
      if (v > (1ull << 40) || (v != 0 && numel > (1ull << 50) / v)) corrupt("tensor '", name, "' is impossibly large");
      numel *= v;
      entry.shape.push_back(static_cast<int64_t>(v));
    }
    const Json& off = e["data_offsets"];
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned()) {
      corrupt("tensor '", name, "' has malformed data_offsets");
    }
    entry.begin = off[0].get<uint64_t>();
    entry.end = off[1].get<uint64_t>();
    if (entry.begin > entry.end || entry.end > out.data_size) {
      corrupt("tensor '", name, "' spans bytes [", entry.begin, ", ", entry.end, ") but the data holds ", out.data_size);
    }
    if (entry.end - entry.begin != numel * entry.dtype_size) {
      corrupt("tensor '", name, "' needs ", numel * entry.dtype_size, " bytes for its shape but spans ",
              entry.end - entry.begin);
    }
    ranges.emplace_back(entry.begin, entry.end);
    out.tensors.push_back(std::move(entry));
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i) {
    if (ranges[i].first < ranges[i - 1].second && ranges[i].second > ranges[i].first) {
      corrupt("two tensors overlap at byte ", ranges[i].first);
    }
  }
  return out;
}

}  // namespace rlhf
