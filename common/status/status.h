#ifndef FEDGE_COMMON_STATUS_STATUS_H_
#define FEDGE_COMMON_STATUS_STATUS_H_

#include <utility>

#include "absl/strings/string_view.h"

#include "absl/status/status.h"
#include "absl/status/statusor.h"

// Abseil 20220623 ships no RETURN_IF_ERROR; these mirror the meaning of today's Abseil macros.
#define FEDGE_RETURN_IF_ERROR(expr)                 \
  do {                                              \
    ::absl::Status fedge_status_ = (expr);          \
    if (!fedge_status_.ok()) return fedge_status_;  \
  } while (0)

#define FEDGE_STATUS_CONCAT_INNER_(a, b) a##b
#define FEDGE_STATUS_CONCAT_(a, b) FEDGE_STATUS_CONCAT_INNER_(a, b)

#define FEDGE_ASSIGN_OR_RETURN(lhs, rexpr) \
  FEDGE_ASSIGN_OR_RETURN_IMPL_(FEDGE_STATUS_CONCAT_(fedge_statusor_, __LINE__), lhs, rexpr)

#define FEDGE_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, rexpr) \
  auto statusor = (rexpr);                                 \
  if (!statusor.ok()) return statusor.status();            \
  lhs = std::move(statusor).value()

namespace fedge {

// Prefixes a status message with context, keeping its code.
absl::Status Annotate(const absl::Status& status, absl::string_view context);

}  // namespace fedge

#endif  // FEDGE_COMMON_STATUS_STATUS_H_
