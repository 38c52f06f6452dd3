#ifndef FEDGE_CLOUD_API_REST_REQUEST_H_
#define FEDGE_CLOUD_API_REST_REQUEST_H_

#include <memory>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/message.h"

namespace fedge::cloud::api {

// The REST gateway's reading of an HTTP request, without the server: pure functions over the
// generated descriptor pool, so they can be tested and fuzzed without a socket or a channel.

// The Admin method named `name`; NOT_FOUND naming the service otherwise.
absl::StatusOr<const google::protobuf::MethodDescriptor*> FindAdminMethod(absl::string_view name);

// Turns a request body into the method's request message. Surrounding whitespace is ignored;
// an empty body is the empty message; anything else must be the request as protobuf JSON with
// no unknown fields (INVALID_ARGUMENT naming the message type and what the parser refused).
absl::StatusOr<std::unique_ptr<google::protobuf::Message>> ParseRequestBody(
    const google::protobuf::MethodDescriptor& method, absl::string_view body);

}  // namespace fedge::cloud::api

#endif  // FEDGE_CLOUD_API_REST_REQUEST_H_
