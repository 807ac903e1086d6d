// Minimal logging to stderr. Only one process of a distributed run prints
// (set_log_enabled(rank == 0)); errors always print.
#pragma once

#include <string>

#include "common/error.h"

namespace rlhf {

void set_log_enabled(bool enabled);
bool log_enabled();
void log_line(const std::string& line);

template <class... Args>
void log_info(Args&&... args) {
  if (log_enabled()) log_line(str_cat(std::forward<Args>(args)...));
}

// "1h02m", "3m05s", "12s": for ETAs in progress lines.
std::string format_duration(double seconds);
// "12,345": thousands separators for counts in progress lines.
std::string format_count(double value);

}  // namespace rlhf
