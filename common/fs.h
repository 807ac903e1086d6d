// File-system helpers: whole-file reads, atomic writes (temp + fsync +
// rename, so a reader never sees half a file), read-only memory maps, and
// listing corpus folders. Failures throw rlhf::Error naming the path.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace rlhf {

std::string read_file(const std::string& path);

// Writes `data` to `path` atomically: a crash leaves either the old file or
// the new one, never a mix.
void write_file_atomic(const std::string& path, std::string_view data);

// Streams a file into place atomically: bytes go to a temporary file beside
// `path`; commit() flushes and renames it. Destroyed uncommitted, it deletes
// the temporary file and leaves `path` untouched.
class AtomicFileWriter {
 public:
  explicit AtomicFileWriter(std::string path);
  ~AtomicFileWriter();
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;

  void write(const void* data, size_t size);
  void write(std::string_view data) { write(data.data(), data.size()); }
  void commit();

 private:
  std::string path_;
  std::string tmp_;
  int fd_ = -1;
};

bool path_exists(const std::string& path);
bool is_directory(const std::string& path);
void make_dirs(const std::string& path);
void remove_all(const std::string& path);
// Renames `from` over `to` (both folders or both files), replacing `to`.
// A folder `to` is first moved aside so the swap is as close to atomic as
// POSIX allows; the old copy is deleted afterwards.
void replace_path(const std::string& from, const std::string& to);
// Flushes a folder's entries (after a rename into it) to disk.
void fsync_directory(const std::string& path);

// Files under `path` (itself if a file), sorted, whose names end with one of
// `extensions` (all files if empty). Hidden files are skipped.
std::vector<std::string> list_files(const std::string& path,
                                    const std::vector<std::string>& extensions);

std::string join_path(const std::string& a, const std::string& b);
std::string parent_path(const std::string& path);

// A read-only memory map of a whole file. Owns the mapping.
class MappedFile {
 public:
  // `copy_on_write`: the pages may be written, privately (the file never
  // changes), so data handed out as tensors tolerates in-place updates.
  explicit MappedFile(const std::string& path, bool copy_on_write = false);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace rlhf
