#include "train/safetensors.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "common/config.h"
#include "common/error.h"
#include "common/fs.h"
#include "common/safetensors_header.h"

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
  const SafetensorsHeader header = parse_safetensors_header(data, size, source);
  const uint8_t* base = data + header.data_offset;
  SafetensorsFile out;
  out.metadata = header.metadata;
  for (const SafetensorsEntry& e : header.tensors) {
    const DtypeInfo* d = dtype_by_name(e.dtype);
    RLHF_CHECK(d != nullptr, "safetensors dtype ", e.dtype, " has no LibTorch type");
    const uint8_t* bytes = base + e.begin;
    if (owner && e.end > e.begin && reinterpret_cast<uintptr_t>(bytes) % d->size == 0) {
      // A view of the mapped file: loading a model reads each byte once.
      // When the view dies its whole pages leave memory (the file keeps them).
      const size_t length = e.end - e.begin;
      out.tensors[e.name] = torch::from_blob(
          const_cast<uint8_t*>(bytes), e.shape,
          [owner, length](void* p) {
            const auto page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
            const uintptr_t from = (reinterpret_cast<uintptr_t>(p) + page - 1) / page * page;
            const uintptr_t to = (reinterpret_cast<uintptr_t>(p) + length) / page * page;
            if (to > from) ::madvise(reinterpret_cast<void*>(from), to - from, MADV_DONTNEED);
          },
          torch::TensorOptions().dtype(d->type));
      continue;
    }
    torch::Tensor t = torch::empty(e.shape, torch::TensorOptions().dtype(d->type));
    if (e.end > e.begin) std::memcpy(t.data_ptr(), bytes, e.end - e.begin);
    out.tensors[e.name] = t;
  }
  return out;
}

SafetensorsFile load_safetensors(const std::string& path) {
  if (!path_exists(path)) fail(ErrorKind::kIo, "'", path, "' does not exist");
  auto file = std::make_shared<const MappedFile>(path, /*copy_on_write=*/true);
  return parse_safetensors(file->data(), file->size(), path, file);
}

}  // namespace rlhf
