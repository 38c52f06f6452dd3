#ifndef FEDGE_COMMON_STATUS_QUOTE_H_
#define FEDGE_COMMON_STATUS_QUOTE_H_

#include <cstddef>
#include <string>

#include "absl/strings/string_view.h"

namespace fedge {

// How much of an untrusted string an error or a log line shows.
inline constexpr size_t kQuotedPrefix = 64;

// Untrusted input made safe to put in an error message or a log line: at most `max` bytes of
// `s`, C-escaped (a newline cannot forge a log line, a control byte cannot reach a terminal)
// and in double quotes; when cut, followed by "... (N bytes)". The result is at most about
// 4 * max + 32 bytes whatever the input.
std::string Quote(absl::string_view s, size_t max = kQuotedPrefix);

}  // namespace fedge

#endif  // FEDGE_COMMON_STATUS_QUOTE_H_
