#include "common/status/grpc_status.h"

#include <string>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace fedge {
namespace {

bool NeedsEscape(char c) {
  const auto u = static_cast<unsigned char>(c);
  return (u < 0x20 && c != '\n') || u == 0x7f;
}

}  // namespace

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  absl::string_view message = status.message();
  std::string out;
  const bool cut = message.size() > kMaxStatusMessage;
  if (cut) message = message.substr(0, kMaxStatusMessage);
  out.reserve(message.size() + 32);
  for (char c : message) {
    if (NeedsEscape(c)) {
      out += absl::CHexEscape(absl::string_view(&c, 1));
    } else {
      out += c;
    }
  }
  if (cut) absl::StrAppend(&out, "... (message cut at ", kMaxStatusMessage, " bytes)");
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::move(out));
}

absl::Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

std::string GrpcCodeName(grpc::StatusCode code) {
  std::string name = absl::StatusCodeToString(static_cast<absl::StatusCode>(code));
  return name.empty() ? "UNKNOWN" : name;
}

}  // namespace fedge
