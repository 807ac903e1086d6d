#include "train/safetensors.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "common/config.h"
#include "common/error.h"
#include "common/fs.h"

namespace rlhf {
namespace {

struct DtypeInfo {
  const char* name;
  torch::ScalarType type;
  size_t size;
};

constexpr DtypeInfo kDtypes[] = {
    {"F64", torch::kFloat64, 8}, {"F32", torch::kFloat32, 4}, {"F16", torch::kFloat16, 2},
    {"BF16", torch::kBFloat16, 2}, {"I64", torch::kInt64, 8}, {"I32", torch::kInt32, 4},
    {"I16", torch::kInt16, 2},   {"I8", torch::kInt8, 1},     {"U8", torch::kUInt8, 1},
    {"BOOL", torch::kBool, 1},
};

const DtypeInfo* dtype_by_name(const std::string& name) {
  for (const auto& d : kDtypes) {
    if (name == d.name) return &d;
  }
  return nullptr;
}

const DtypeInfo& dtype_by_type(torch::ScalarType type) {
  for (const auto& d : kDtypes) {
    if (d.type == type) return d;
  }
  fail(ErrorKind::kData, "safetensors cannot store tensors of type ", c10::toString(type));
}

constexpr uint64_t kMaxHeader = 100ull << 20;  // as the reference implementation

}  // namespace

void save_safetensors(const std::string& path, const TensorMap& tensors,
                      const Metadata& metadata) {
  Json header = Json::object();
  if (!metadata.empty()) {
    Json meta = Json::object();
    for (const auto& [k, v] : metadata) meta[k] = v;
    header["__metadata__"] = meta;
  }
  std::vector<torch::Tensor> bodies;
  uint64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    RLHF_CHECK(tensor.defined(), "tensor '", name, "' is undefined");
    torch::Tensor t = tensor.detach().to(torch::kCPU).contiguous();
    const DtypeInfo& d = dtype_by_type(t.scalar_type());
    const uint64_t bytes = static_cast<uint64_t>(t.numel()) * d.size;
    header[name] = {{"dtype", d.name}, {"shape", t.sizes().vec()},
                    {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    bodies.push_back(t);
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // align the data to 8 bytes
  uint64_t n = text.size();
  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(n >> (8 * i));

  AtomicFileWriter out(path);
  out.write(len, 8);
  out.write(text);
  for (const auto& t : bodies) {
    out.write(t.data_ptr(), static_cast<size_t>(t.numel()) * t.element_size());
  }
  out.commit();
}

SafetensorsFile parse_safetensors(const uint8_t* data, size_t size, const std::string& source,
                                  std::shared_ptr<const MappedFile> owner) {
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

  const uint64_t data_size = size - 8 - n;
  const uint8_t* base = data + 8 + n;
  SafetensorsFile out;
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
    const DtypeInfo* d = e["dtype"].is_string() ? dtype_by_name(e["dtype"].get<std::string>()) : nullptr;
    if (d == nullptr) corrupt("tensor '", name, "' has an unsupported dtype ", e["dtype"].dump());
    std::vector<int64_t> shape;
    uint64_t numel = 1;
    if (!e["shape"].is_array()) corrupt("tensor '", name, "' has a shape that is not a list");
    for (const auto& dim : e["shape"]) {
      if (!dim.is_number_unsigned()) corrupt("tensor '", name, "' has a bad dimension ", dim.dump());
      const uint64_t v = dim.get<uint64_t>();
      if (v > (1ull << 40) || (v != 0 && numel > (1ull << 50) / v)) corrupt("tensor '", name, "' is impossibly large");
      numel *= v;
      shape.push_back(static_cast<int64_t>(v));
    }
    const Json& off = e["data_offsets"];
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned()) {
      corrupt("tensor '", name, "' has malformed data_offsets");
    }
    const uint64_t begin = off[0].get<uint64_t>(), end = off[1].get<uint64_t>();
    if (begin > end || end > data_size) {
      corrupt("tensor '", name, "' spans bytes [", begin, ", ", end, ") but the data holds ", data_size);
    }
    if (end - begin != numel * d->size) {
      corrupt("tensor '", name, "' needs ", numel * d->size, " bytes for its shape but spans ", end - begin);
    }
    ranges.emplace_back(begin, end);
    const uint8_t* bytes = base + begin;
    if (owner && end > begin && reinterpret_cast<uintptr_t>(bytes) % d->size == 0) {
      // A view of the mapped file: loading a model reads each byte once.
      // When the view dies its whole pages leave memory (the file keeps them).
      const size_t length = end - begin;
      out.tensors[name] = torch::from_blob(
          const_cast<uint8_t*>(bytes), shape,
          [owner, length](void* p) {
            const auto page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
            const uintptr_t from = (reinterpret_cast<uintptr_t>(p) + page - 1) / page * page;
            const uintptr_t to = (reinterpret_cast<uintptr_t>(p) + length) / page * page;
            if (to > from) ::madvise(reinterpret_cast<void*>(from), to - from, MADV_DONTNEED);
          },
          torch::TensorOptions().dtype(d->type));
      continue;
    }
    torch::Tensor t = torch::empty(shape, torch::TensorOptions().dtype(d->type));
    if (end > begin) std::memcpy(t.data_ptr(), bytes, end - begin);
    out.tensors[name] = t;
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i) {
    if (ranges[i].first < ranges[i - 1].second && ranges[i].second > ranges[i].first) {
      corrupt("two tensors overlap at byte ", ranges[i].first);
    }
  }
  return out;
}

SafetensorsFile load_safetensors(const std::string& path) {
  if (!path_exists(path)) fail(ErrorKind::kIo, "'", path, "' does not exist");
  auto file = std::make_shared<const MappedFile>(path, /*copy_on_write=*/true);
  return parse_safetensors(file->data(), file->size(), path, file);
}

}  // namespace rlhf
