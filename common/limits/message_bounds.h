#ifndef FEDGE_COMMON_LIMITS_MESSAGE_BOUNDS_H_
#define FEDGE_COMMON_LIMITS_MESSAGE_BOUNDS_H_

#include <cstddef>

#include "absl/status/status.h"
#include "google/protobuf/message.h"

namespace fedge::limits {

// Size bounds on a protobuf message from an untrusted peer, checked on every field the message
// holds, however deep: a field added to a proto later is bounded without anyone remembering to.
struct MessageBounds {
  size_t max_bytes = 64 * 1024;  // the serialized message
  size_t max_string = 1024;      // one string field or map key/value (not `bytes` fields)
  size_t max_bytes_field = 0;    // one `bytes` field; 0: only max_bytes bounds it
  size_t max_repeated = 1024;    // entries of one repeated field or map
  int max_depth = 16;            // nesting of messages
};

// OK, or INVALID_ARGUMENT (RESOURCE_EXHAUSTED for the overall size) naming the first field out
// of bounds by its path (e.g. "drift.psi has 5000 entries; at most 1024"). The input is never
// echoed.
absl::Status CheckBounds(const google::protobuf::Message& message, const MessageBounds& bounds);

}  // namespace fedge::limits

#endif  // FEDGE_COMMON_LIMITS_MESSAGE_BOUNDS_H_
