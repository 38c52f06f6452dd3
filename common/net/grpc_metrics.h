#ifndef FEDGE_COMMON_NET_GRPC_METRICS_H_
#define FEDGE_COMMON_NET_GRPC_METRICS_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "grpcpp/support/server_interceptor.h"

namespace fedge::net {

// Counts every call a server answers, by method and status code, and times it:
//   <prefix>_grpc_requests_total{method, code}
//   <prefix>_grpc_request_duration_seconds{method}
// `method` is "Service.Method" (e.g. "Fleet.UploadUpdate") for the services named here, and
// "other" for anything else a client asks for, so the label set stays bounded. A call that
// ends without a status (the client went away) counts as CANCELLED. The series of every
// method with code OK exist from the start.
std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> MakeGrpcMetrics(
    const std::string& prefix, const std::vector<std::string>& service_full_names);

// "/fedge.v1.Fleet/UploadUpdate" -> "Fleet.UploadUpdate".
std::string ShortMethodName(absl::string_view full_method);

}  // namespace fedge::net

#endif  // FEDGE_COMMON_NET_GRPC_METRICS_H_
