#include "common/fs.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/error.h"

namespace fs = std::filesystem;

namespace rlhf {
namespace {

std::string errno_text() { return std::strerror(errno); }

}  // namespace

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    fail(ErrorKind::kIo, "cannot open '", path, "': ", errno_text(),
         ". Check the path and its permissions.");
  }
  std::ostringstream buffer;
  buffer << in.rdbuf();
  if (in.bad()) fail(ErrorKind::kIo, "error while reading '", path, "'");
  return buffer.str();
}

AtomicFileWriter::AtomicFileWriter(std::string path)
    : path_(std::move(path)), tmp_(str_cat(path_, ".tmp.", ::getpid())) {
  fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) {
    fail(ErrorKind::kIo, "cannot create '", tmp_, "': ", errno_text(),
         ". Check that the folder exists and is writable.");
  }
}

AtomicFileWriter::~AtomicFileWriter() {
  if (fd_ >= 0) {
    ::close(fd_);
    ::unlink(tmp_.c_str());
  }
}

void AtomicFileWriter::write(const void* data, size_t size) {
  RLHF_CHECK(fd_ >= 0, "write after commit");
  const char* p = static_cast<const char*>(data);
  size_t written = 0;
  while (written < size) {
    ssize_t n = ::write(fd_, p + written, size - written);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail(ErrorKind::kIo, "cannot write '", tmp_, "': ", errno_text(), " (is the disk full?)");
    }
    written += static_cast<size_t>(n);
  }
}

void AtomicFileWriter::commit() {
  RLHF_CHECK(fd_ >= 0, "commit twice");
  const int fd = fd_;
  fd_ = -1;
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    std::string why = errno_text();
    ::unlink(tmp_.c_str());
    fail(ErrorKind::kIo, "cannot flush '", tmp_, "': ", why);
  }
  if (::rename(tmp_.c_str(), path_.c_str()) != 0) {
    std::string why = errno_text();
    ::unlink(tmp_.c_str());
    fail(ErrorKind::kIo, "cannot rename '", tmp_, "' to '", path_, "': ", why);
  }
  fsync_directory(parent_path(path_));
}

void write_file_atomic(const std::string& path, std::string_view data) {
  AtomicFileWriter writer(path);
  writer.write(data);
  writer.commit();
}

bool path_exists(const std::string& path) {
  std::error_code ec;
  return fs::exists(path, ec);
}

bool is_directory(const std::string& path) {
  std::error_code ec;
  return fs::is_directory(path, ec);
}

void make_dirs(const std::string& path) {
  std::error_code ec;
  fs::create_directories(path, ec);
  if (ec && !is_directory(path)) {
    fail(ErrorKind::kIo, "cannot create folder '", path, "': ", ec.message());
  }
}

void remove_all(const std::string& path) {
  std::error_code ec;
  fs::remove_all(path, ec);
  if (ec) fail(ErrorKind::kIo, "cannot remove '", path, "': ", ec.message());
}

void replace_path(const std::string& from, const std::string& to) {
  std::string aside;
  if (is_directory(to)) {
    aside = str_cat(to, ".old.", ::getpid());
    remove_all(aside);
    if (::rename(to.c_str(), aside.c_str()) != 0) {
      fail(ErrorKind::kIo, "cannot move '", to, "' aside: ", errno_text());
    }
  }
  if (::rename(from.c_str(), to.c_str()) != 0) {
    fail(ErrorKind::kIo, "cannot rename '", from, "' to '", to, "': ",
         errno_text());
  }
  fsync_directory(parent_path(to));
  if (!aside.empty()) remove_all(aside);
}

void fsync_directory(const std::string& path) {
  int fd = ::open(path.empty() ? "." : path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;  // Best effort: some file systems refuse.
  ::fsync(fd);
  ::close(fd);
}

std::vector<std::string> list_files(const std::string& path,
                                    const std::vector<std::string>& extensions) {
  auto wanted = [&](const fs::path& p) {
    const std::string name = p.filename().string();
    if (name.empty() || name[0] == '.') return false;
    if (extensions.empty()) return true;
    return std::any_of(extensions.begin(), extensions.end(), [&](const std::string& ext) {
      return name.size() >= ext.size() &&
             name.compare(name.size() - ext.size(), ext.size(), ext) == 0;
    });
  };
  std::vector<std::string> out;
  std::error_code ec;
  if (fs::is_regular_file(path, ec)) return {path};
  if (!fs::is_directory(path, ec)) {
    fail(ErrorKind::kIo, "'", path, "' does not exist. Pass a text file, a .jsonl file or a folder of them.");
  }
  for (auto it = fs::recursive_directory_iterator(path, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (it->is_regular_file() && wanted(it->path())) out.push_back(it->path().string());
  }
  if (ec) fail(ErrorKind::kIo, "cannot list '", path, "': ", ec.message());
  std::sort(out.begin(), out.end());
  return out;
}

std::string join_path(const std::string& a, const std::string& b) {
  return (fs::path(a) / b).string();
}

std::string parent_path(const std::string& path) {
  return fs::path(path).parent_path().string();
}

MappedFile::MappedFile(const std::string& path, bool copy_on_write) : path_(path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(ErrorKind::kIo, "cannot open '", path, "': ", errno_text());
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    fail(ErrorKind::kIo, "cannot stat '", path, "': ", errno_text());
  }
  size_ = static_cast<size_t>(st.st_size);
  if (size_ > 0) {
    void* p = ::mmap(nullptr, size_, PROT_READ | (copy_on_write ? PROT_WRITE : 0), MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      ::close(fd);
      fail(ErrorKind::kIo, "cannot map '", path, "': ", errno_text());
    }
    data_ = static_cast<const uint8_t*>(p);
  }
  ::close(fd);
}

MappedFile::~MappedFile() {
  if (data_ != nullptr) ::munmap(const_cast<uint8_t*>(data_), size_);
}

MappedFile::MappedFile(MappedFile&& other) noexcept
    : path_(std::move(other.path_)), data_(other.data_), size_(other.size_) {
  other.data_ = nullptr;
  other.size_ = 0;
}

MappedFile& MappedFile::operator=(MappedFile&& other) noexcept {
  if (this != &other) {
    if (data_ != nullptr) ::munmap(const_cast<uint8_t*>(data_), size_);
    path_ = std::move(other.path_);
    data_ = other.data_;
    size_ = other.size_;
    other.data_ = nullptr;
    other.size_ = 0;
  }
  return *this;
}

}  // namespace rlhf
