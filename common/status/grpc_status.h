#ifndef FEDGE_COMMON_STATUS_GRPC_STATUS_H_
#define FEDGE_COMMON_STATUS_GRPC_STATUS_H_

#include <string>

#include "absl/status/status.h"
#include "grpcpp/support/status.h"

namespace fedge {

// The one place where absl::Status becomes grpc::Status and back. Codes map one to one.
grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);
// The canonical name of a code ("INVALID_ARGUMENT"), as metrics labels and REST bodies use it.
std::string GrpcCodeName(grpc::StatusCode code);

}  // namespace fedge

#endif  // FEDGE_COMMON_STATUS_GRPC_STATUS_H_
