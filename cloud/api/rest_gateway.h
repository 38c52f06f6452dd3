#ifndef FEDGE_CLOUD_API_REST_GATEWAY_H_
#define FEDGE_CLOUD_API_REST_GATEWAY_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "grpcpp/channel.h"

namespace fedge::cloud::api {

// REST/JSON for the Admin API, routed by convention (Debian ships no grpc-gateway):
//
//   POST /v1/admin/{Method}   body: the request message as protobuf JSON (unknown fields are
//                             refused); answer: the response message as JSON.
//   GET  /v1/admin            the list of methods.
//
// Every request is dispatched through the Admin server's in-process channel, so validation,
// authentication and metrics apply exactly as on gRPC. gRPC codes map to HTTP statuses
// (INVALID_ARGUMENT 400, NOT_FOUND 404, ...) and errors answer
// {"code": <grpc code number>, "status": "<NAME>", "message": "..."}. Server-streaming methods
// (WatchEvents, DownloadVersion) answer newline-delimited JSON, one message a line; an idle
// stream sends an empty line every few seconds (to notice a client that left, which cancels
// the call), and a stream that fails after it began ends with the line
// {"error": {"code": ..., "status": ..., "message": ...}}. A client-streaming method
// (RegisterModel) takes the body as its only message. The Authorization header (`Bearer
// <token>`) goes on as the call's `authorization` metadata, so tokens and roles are checked by
// the Admin service exactly as on gRPC (401 and 403 here). The X-Fedge-Principal header becomes
// the call's principal when authentication is off. Stop() cancels the calls in flight and waits for the HTTP server's threads.
class RestGateway {
 public:
  struct Options {
    std::string host = "0.0.0.0";
    int port = 7072;  // 0 picks a free port
    std::shared_ptr<grpc::Channel> admin_channel;
    // HTTPS with this certificate and key (re-read when the certificate file changes); empty:
    // plain HTTP.
    std::string tls_cert_file;
    std::string tls_key_file;
    int timeout_seconds = 60;  // deadline of each call but server streams, which run until
                               // the client leaves
  };

  static absl::StatusOr<std::unique_ptr<RestGateway>> Start(Options options);
  ~RestGateway();
  int port() const;
  void Stop();

 private:
  struct Impl;
  explicit RestGateway(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace fedge::cloud::api

#endif  // FEDGE_CLOUD_API_REST_GATEWAY_H_
