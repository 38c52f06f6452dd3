// The real coordinator's REST port: walking the Admin service's descriptor, every unary method
// is reachable over HTTP and implemented (the answer is the method's output message, or an
// error the service itself produced for an empty request, never UNIMPLEMENTED).

#include <httplib.h>

#include "absl/strings/str_cat.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "tests/testing/fixtures.h"
#include "tests/testing/test_cloud.h"

namespace fedge {
namespace {

TEST(RestAdminTest, EveryUnaryAdminMethodIsReachableAndImplemented) {
  testing::TempDir dir;
  auto cloud = testing::TestCloud::Start(dir.path());
  ASSERT_TRUE(cloud.ok()) << cloud.status();
  ASSERT_TRUE(testing::Register(cloud->admin.get(), testing::SyntheticModelHeader("m")).ok());
  httplib::Client http("127.0.0.1", cloud->server->rest_port());
  http.set_read_timeout(30, 0);
  const auto* service =
      google::protobuf::DescriptorPool::generated_pool()->FindServiceByName("fedge.v1.Admin");
  ASSERT_NE(service, nullptr);
  int reached = 0;
  for (int i = 0; i < service->method_count(); ++i) {
    const auto* method = service->method(i);
    if (method->client_streaming() || method->server_streaming()) continue;
    SCOPED_TRACE(method->name());
    auto res = http.Post(absl::StrCat("/v1/admin/", method->name()), "{}", "application/json");
    ASSERT_TRUE(res);
    if (res->status == 200) {
      std::unique_ptr<google::protobuf::Message> out(
          google::protobuf::MessageFactory::generated_factory()
              ->GetPrototype(method->output_type())
              ->New());
      EXPECT_TRUE(google::protobuf::util::JsonStringToMessage(res->body, out.get()).ok())
          << res->body;
    } else {
      google::protobuf::Struct error;
      ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(res->body, &error).ok())
          << res->body;
      const int code = static_cast<int>(error.fields().at("code").number_value());
      EXPECT_NE(code, static_cast<int>(grpc::StatusCode::UNIMPLEMENTED)) << res->body;
      EXPECT_EQ(error.fields().at("message").string_value().find("has no method"),
                std::string::npos)
          << res->body;
    }
    ++reached;
  }
  EXPECT_GE(reached, 27);  // every unary method of admin.proto today

  // A real call with a body: the registered model, by name.
  auto res = http.Post("/v1/admin/GetModel", R"({"name": "m"})", "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  v1::Model model;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(res->body, &model).ok());
  EXPECT_EQ(model.latest_version(), 1);
  cloud->server->Shutdown();
}

}  // namespace
}  // namespace fedge
