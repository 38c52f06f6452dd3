#ifndef FEDGE_COMMON_STATUS_GRPC_STATUS_H_
#define FEDGE_COMMON_STATUS_GRPC_STATUS_H_

#include <string>

#include "absl/status/status.h"
#include "grpcpp/support/status.h"

namespace fedge {

// The longest status message that goes out on the wire; longer ones are cut, saying so.
inline constexpr size_t kMaxStatusMessage = 2048;

// The one place where absl::Status becomes grpc::Status and back. Codes map one to one. The
// message is bounded (kMaxStatusMessage) and its control characters other than newline are
// escaped, so that no input a message quotes can grow a status past gRPC's metadata limits or
// write to the caller's terminal.
grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);
// The canonical name of a code ("INVALID_ARGUMENT"), as metrics labels and REST bodies use it.
std::string GrpcCodeName(grpc::StatusCode code);

}  // namespace fedge

#endif  // FEDGE_COMMON_STATUS_GRPC_STATUS_H_
