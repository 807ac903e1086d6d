#include "common/error.h"

namespace rlhf {

const char* error_kind_name(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::kUsage: return "usage";
    case ErrorKind::kConfig: return "config";
    case ErrorKind::kData: return "data";
    case ErrorKind::kIo: return "io";
    case ErrorKind::kCorrupt: return "corrupt file";
    case ErrorKind::kNetwork: return "network";
  }
  return "error";
}

void check_failed(const char* file, int line, const char* cond,
                  const std::string& message) {
  throw InternalError(str_cat("internal error at ", file, ":", line,
                              ": check failed: ", cond,
                              message.empty() ? "" : " (", message,
                              message.empty() ? "" : ")"));
}

}  // namespace rlhf
