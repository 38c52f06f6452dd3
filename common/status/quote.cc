#include "common/status/quote.h"

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace fedge {

std::string Quote(absl::string_view s, size_t max) {
  if (s.size() <= max) return absl::StrCat("\"", absl::CHexEscape(s), "\"");
  return absl::StrCat("\"", absl::CHexEscape(s.substr(0, max)), "\"... (", s.size(), " bytes)");
}

}  // namespace fedge
