// Errors, in two tiers (see STYLE.md):
//  - rlhf::Error: an expected failure at a boundary (a file, user data, the
//    config, the network). Its message names the file, line or field and says
//    how to fix it. `main` prints it and exits with status 2.
//  - RLHF_CHECK: a broken invariant, a bug in this program. It throws
//    rlhf::InternalError with file and line, and stays on in release builds.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace rlhf {

enum class ErrorKind {
  kUsage,    // bad command line
  kConfig,   // bad config file or override
  kData,     // bad user data (corpus, JSONL, labels)
  kIo,       // a file or folder that cannot be read or written
  kCorrupt,  // a file that exists but is damaged (truncated checkpoint, ...)
  kNetwork,  // peers, sockets, rendezvous
};

const char* error_kind_name(ErrorKind kind);

class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, const std::string& message)
      : std::runtime_error(message), kind_(kind) {}
  ErrorKind kind() const { return kind_; }

 private:
  ErrorKind kind_;
};

class InternalError : public std::logic_error {
 public:
  using std::logic_error::logic_error;
};

// Concatenates anything that streams: str_cat("step ", 3, ": ", 1.5).
template <class... Args>
std::string str_cat(Args&&... args) {
  std::ostringstream out;
  if constexpr (sizeof...(Args) > 0) (out << ... << std::forward<Args>(args));
  return out.str();
}

template <class... Args>
[[noreturn]] void fail(ErrorKind kind, Args&&... args) {
  throw Error(kind, str_cat(std::forward<Args>(args)...));
}

[[noreturn]] void check_failed(const char* file, int line, const char* cond,
                               const std::string& message);

}  // namespace rlhf

#define RLHF_CHECK(cond, ...)                                             \
  do {                                                                    \
    if (!(cond)) {                                                        \
      ::rlhf::check_failed(__FILE__, __LINE__, #cond,                     \
                           ::rlhf::str_cat(__VA_ARGS__));                 \
    }                                                                     \
  } while (0)
