#include "cloud/api/rest_request.h"

#include <string>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "fedge/v1/admin.pb.h"
#include "google/protobuf/util/json_util.h"

namespace fedge::cloud::api {

using google::protobuf::Message;
using google::protobuf::MethodDescriptor;

absl::StatusOr<const MethodDescriptor*> FindAdminMethod(absl::string_view name) {
  // Through a message of admin.proto, so the linker keeps the file that registers the service.
  const google::protobuf::ServiceDescriptor* service =
      v1::ListModelsRequest::descriptor()->file()->FindServiceByName("Admin");
  const MethodDescriptor* method = service->FindMethodByName(std::string(name));
  if (method == nullptr) {
    return absl::NotFoundError(absl::StrCat(service->full_name(), " has no method \"", name, "\""));
  }
  return method;
}

absl::StatusOr<std::unique_ptr<Message>> ParseRequestBody(const MethodDescriptor& method,
                                                          absl::string_view body) {
  auto* factory = google::protobuf::MessageFactory::generated_factory();
  std::unique_ptr<Message> request(factory->GetPrototype(method.input_type())->New());
  body = absl::StripAsciiWhitespace(body);
  if (body.empty()) return request;
  google::protobuf::util::JsonParseOptions parse;
  parse.ignore_unknown_fields = false;
  const auto parsed = google::protobuf::util::JsonStringToMessage(
      google::protobuf::StringPiece(body.data(), body.size()), request.get(), parse);
  if (!parsed.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("request body is not a valid ",
                                                   method.input_type()->full_name(), ": ",
                                                   parsed.message().ToString()));
  }
  return request;
}

}  // namespace fedge::cloud::api
