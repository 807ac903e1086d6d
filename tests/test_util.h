// Helpers shared by the test suites.
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/fs.h"

namespace rlhf::test {

// A fresh folder under the build tree, removed when the fixture ends.
// The lines of a text file.
inline std::vector<std::string> file_lines(const std::string& path) {
  std::vector<std::string> out;
  std::istringstream in(read_file(path));
  std::string l;
  while (std::getline(in, l)) out.push_back(l);
  return out;
}

class TempDir {
 public:
  explicit TempDir(const std::string& name) {
    const char* base = std::getenv("TMPDIR");
    path_ = std::string(base ? base : "/tmp") + "/rlhf-test-" + name + "-" + std::to_string(::getpid());
    remove_all(path_);
    make_dirs(path_);
  }
  ~TempDir() { remove_all(path_); }
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// Runs `fn` and returns the rlhf::Error message it throws; fails the test if
// it throws nothing or something else.
template <class Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected rlhf::Error, got: " << e.what();
    return "";
  }
  ADD_FAILURE() << "expected an rlhf::Error, nothing was thrown";
  return "";
}

inline std::string source_dir() { return RLHF_SOURCE_DIR; }

}  // namespace rlhf::test
