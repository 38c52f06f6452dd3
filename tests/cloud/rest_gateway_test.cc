#include "cloud/api/rest_gateway.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "fedge/v1/admin.grpc.pb.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/message.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"
#include "grpcpp/server_context.h"
#include "gtest/gtest.h"
#include "httplib.h"

namespace fedge::cloud::api {
namespace {

using google::protobuf::Struct;

constexpr char kGatewayNoMethod[] = "has no method";

std::string PrincipalOf(const grpc::ServerContext& context) {
  const auto& metadata = context.client_metadata();
  auto it = metadata.find("x-fedge-principal");
  if (it == metadata.end()) return "";
  return std::string(it->second.data(), it->second.size());
}

bool WaitFor(const std::atomic<bool>& flag, absl::Duration timeout) {
  const absl::Time give_up = absl::Now() + timeout;
  while (!flag.load()) {
    if (absl::Now() > give_up) return false;
    absl::SleepFor(absl::Milliseconds(5));
  }
  return true;
}

// A stand-in for the Admin service: fixed answers, and a record of what reached it.
class FakeAdmin final : public v1::Admin::Service {
 public:
  grpc::Status GetVersion(grpc::ServerContext* context, const v1::GetVersionRequest* request,
                          v1::Version* response) override {
    if (request->model() != "m" || request->version() != 1) {
      return grpc::Status(grpc::StatusCode::NOT_FOUND, "no version " + request->model() + "/" +
                                                           std::to_string(request->version()));
    }
    response->set_model("m");
    response->set_version(1);
    response->set_sha256("abc");
    response->set_size_bytes(42);
    response->set_creator(PrincipalOf(*context));
    return grpc::Status::OK;
  }

  grpc::Status ListModels(grpc::ServerContext*, const v1::ListModelsRequest*,
                          v1::ListModelsResponse* response) override {
    response->add_models()->set_name("a");
    response->add_models()->set_name("b");
    return grpc::Status::OK;
  }

  grpc::Status RegisterModel(grpc::ServerContext* context,
                             grpc::ServerReader<v1::RegisterModelRequest>* reader,
                             v1::Version* response) override {
    v1::RegisterModelRequest message;
    if (!reader->Read(&message) || !message.has_header()) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "header first");
    }
    int more = 0;
    while (reader->Read(&message)) ++more;
    if (more != 0) return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "one message only");
    response->set_model(message.header().name());
    response->set_version(7);
    response->set_creator(PrincipalOf(*context));
    return grpc::Status::OK;
  }

  // after_id 0: three events, then the end. Any other after_id: nothing until cancelled.
  grpc::Status WatchEvents(grpc::ServerContext* context, const v1::WatchEventsRequest* request,
                           grpc::ServerWriter<v1::Event>* writer) override {
    if (request->after_id() == 0) {
      for (int i = 1; i <= 3; ++i) {
        v1::Event event;
        event.set_id(i);
        event.set_type("job.started");
        event.set_job_id("j" + std::to_string(i));
        writer->Write(event);
      }
      return grpc::Status::OK;
    }
    watch_started = true;
    return WaitUntilCancelled(context);
  }

  // Model "endless": a chunk every 10 ms until cancelled. Others: NOT_FOUND at once.
  grpc::Status DownloadVersion(grpc::ServerContext* context, const v1::GetVersionRequest* request,
                               grpc::ServerWriter<v1::Chunk>* writer) override {
    if (request->model() != "endless") {
      return grpc::Status(grpc::StatusCode::NOT_FOUND, "no model " + request->model());
    }
    v1::Chunk chunk;
    chunk.set_data(std::string(1024, 'x'));
    const absl::Time give_up = absl::Now() + absl::Seconds(30);
    while (!context->IsCancelled() && absl::Now() < give_up) {
      writer->Write(chunk);
      chunk.set_offset(chunk.offset() + 1024);
      absl::SleepFor(absl::Milliseconds(10));
    }
    download_cancelled = context->IsCancelled();
    return grpc::Status(grpc::StatusCode::CANCELLED, "cancelled");
  }

  std::atomic<bool> watch_started{false};
  std::atomic<bool> watch_cancelled{false};
  std::atomic<bool> download_cancelled{false};

 private:
  grpc::Status WaitUntilCancelled(grpc::ServerContext* context) {
    const absl::Time give_up = absl::Now() + absl::Seconds(30);
    while (!context->IsCancelled() && absl::Now() < give_up) {
      absl::SleepFor(absl::Milliseconds(5));
    }
    watch_cancelled = context->IsCancelled();
    return grpc::Status(grpc::StatusCode::CANCELLED, "cancelled");
  }
};

class RestGatewayTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::ServerBuilder builder;
    int grpc_port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &grpc_port);
    builder.RegisterService(&admin_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);

    RestGateway::Options options;
    options.host = "127.0.0.1";
    options.port = 0;
    options.admin_channel = server_->InProcessChannel(grpc::ChannelArguments());
    options.timeout_seconds = 10;
    auto gateway = RestGateway::Start(options);
    ASSERT_TRUE(gateway.ok()) << gateway.status();
    gateway_ = *std::move(gateway);
    ASSERT_GT(gateway_->port(), 0);
    client_ = std::make_unique<httplib::Client>("127.0.0.1", gateway_->port());
    client_->set_read_timeout(20, 0);
  }

  void TearDown() override {
    if (gateway_) gateway_->Stop();
    if (server_) server_->Shutdown(std::chrono::system_clock::now());
  }

  httplib::Result Post(const std::string& method, const std::string& body,
                       const httplib::Headers& headers = {}) {
    return client_->Post(("/v1/admin/" + method).c_str(), headers, body, "application/json");
  }

  static Struct ParseStruct(const std::string& json) {
    Struct s;
    auto status = google::protobuf::util::JsonStringToMessage(json, &s);
    EXPECT_TRUE(status.ok()) << status.message() << " in " << json;
    return s;
  }

  static std::vector<std::string> Lines(const std::string& body) {
    std::vector<std::string> lines = absl::StrSplit(body, '\n', absl::SkipWhitespace());
    return lines;
  }

  FakeAdmin admin_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<RestGateway> gateway_;
  std::unique_ptr<httplib::Client> client_;
};

TEST_F(RestGatewayTest, ReachesEveryUnaryMethodOfTheAdminService) {
  const google::protobuf::ServiceDescriptor* service =
      google::protobuf::DescriptorPool::generated_pool()->FindServiceByName("fedge.v1.Admin");
  ASSERT_NE(service, nullptr);
  int unary = 0;
  for (int i = 0; i < service->method_count(); ++i) {
    const google::protobuf::MethodDescriptor* method = service->method(i);
    if (method->client_streaming() || method->server_streaming()) continue;
    ++unary;
    SCOPED_TRACE(method->full_name());
    auto res = Post(method->name(), "{}");
    ASSERT_TRUE(res) << httplib::to_string(res.error());
    EXPECT_EQ(res->get_header_value("Content-Type"), "application/json");
    if (res->status == 200) {
      std::unique_ptr<google::protobuf::Message> out(
          google::protobuf::MessageFactory::generated_factory()
              ->GetPrototype(method->output_type())
              ->New());
      auto parsed = google::protobuf::util::JsonStringToMessage(res->body, out.get());
      EXPECT_TRUE(parsed.ok()) << parsed.message() << " in " << res->body;
      continue;
    }
    // An error must come from the service: a real gRPC code, not the gateway's "no method".
    const Struct error = ParseStruct(res->body);
    ASSERT_TRUE(error.fields().contains("code")) << res->body;
    const int code = static_cast<int>(error.fields().at("code").number_value());
    EXPECT_GT(code, 0);
    EXPECT_LE(code, 16);
    EXPECT_EQ(error.fields().at("message").string_value().find(kGatewayNoMethod), std::string::npos)
        << res->body;
    if (code == static_cast<int>(grpc::StatusCode::UNIMPLEMENTED)) {
      EXPECT_EQ(res->status, 501);
      EXPECT_EQ(error.fields().at("status").string_value(), "UNIMPLEMENTED");
    }
  }
  EXPECT_GT(unary, 10);
}

TEST_F(RestGatewayTest, GetVersionAnswersTheMessageWithProtoFieldNames) {
  auto res = Post("GetVersion", R"({"model": "m", "version": 1})");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(res->get_header_value("Content-Type"), "application/json");
  EXPECT_NE(res->body.find("\"size_bytes\""), std::string::npos) << res->body;
  v1::Version version;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(res->body, &version).ok()) << res->body;
  EXPECT_EQ(version.model(), "m");
  EXPECT_EQ(version.version(), 1);
  EXPECT_EQ(version.sha256(), "abc");
  EXPECT_EQ(version.size_bytes(), 42);
}

TEST_F(RestGatewayTest, NotFoundBecomes404WithTheServiceMessage) {
  auto res = Post("GetVersion", R"({"model": "nope", "version": 3})");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 404);
  const Struct error = ParseStruct(res->body);
  EXPECT_EQ(error.fields().at("code").number_value(), 5);
  EXPECT_EQ(error.fields().at("status").string_value(), "NOT_FOUND");
  EXPECT_EQ(error.fields().at("message").string_value(), "no version nope/3");
}

TEST_F(RestGatewayTest, SilentConnectionsDoNotHoldUpARequest) {
  // 40 connections that never send a byte, as a slowloris client would open.
  std::vector<int> silent;
  for (int i = 0; i < 40; ++i) {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(gateway_->port()));
    ::inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
    ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    silent.push_back(fd);
  }
  // A request answers while they are all still open: within a second, half the time the
  // gateway gives a silent connection before closing it.
  client_->set_read_timeout(1, 0);
  auto res = Post("GetVersion", R"({"model": "nope", "version": 3})");
  ASSERT_TRUE(res) << "the request waited behind the silent connections";
  EXPECT_EQ(res->status, 404);
  for (int fd : silent) ::close(fd);
}

TEST_F(RestGatewayTest, PrincipalHeaderReachesTheService) {
  auto res =
      Post("GetVersion", R"({"model": "m", "version": "1"})", {{"X-Fedge-Principal", "alice"}});
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  v1::Version version;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(res->body, &version).ok());
  EXPECT_EQ(version.creator(), "alice");
}

TEST_F(RestGatewayTest, UnknownFieldIsRefusedWith400) {
  auto res = Post("GetVersion", R"({"model": "m", "versoin": 1})");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 400);
  const Struct error = ParseStruct(res->body);
  EXPECT_EQ(error.fields().at("code").number_value(), 3);
  EXPECT_EQ(error.fields().at("status").string_value(), "INVALID_ARGUMENT");
  EXPECT_NE(error.fields().at("message").string_value().find("versoin"), std::string::npos)
      << res->body;
}

TEST_F(RestGatewayTest, MalformedJsonIsRefusedWith400) {
  auto res = Post("GetVersion", R"({"model": )");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 400);
  EXPECT_EQ(ParseStruct(res->body).fields().at("code").number_value(), 3);
}

TEST_F(RestGatewayTest, EmptyBodyIsTheEmptyMessage) {
  auto res = Post("ListModels", "");
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  v1::ListModelsResponse list;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(res->body, &list).ok());
  ASSERT_EQ(list.models_size(), 2);
  EXPECT_EQ(list.models(0).name(), "a");
  EXPECT_EQ(list.models(1).name(), "b");
}

TEST_F(RestGatewayTest, UnknownMethodIs404FromTheGateway) {
  auto res = Post("NoSuchMethod", "{}");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 404);
  const Struct error = ParseStruct(res->body);
  EXPECT_EQ(error.fields().at("code").number_value(), 5);
  EXPECT_NE(error.fields().at("message").string_value().find(kGatewayNoMethod), std::string::npos);
}

TEST_F(RestGatewayTest, ListsTheMethodsWithTheirKinds) {
  auto res = client_->Get("/v1/admin");
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200);
  const Struct list = ParseStruct(res->body);
  const auto& methods = list.fields().at("methods").list_value().values();
  const google::protobuf::ServiceDescriptor* service =
      google::protobuf::DescriptorPool::generated_pool()->FindServiceByName("fedge.v1.Admin");
  ASSERT_EQ(methods.size(), service->method_count());
  std::map<std::string, Struct> by_name;
  for (const auto& m : methods) {
    by_name[m.struct_value().fields().at("name").string_value()] = m.struct_value();
  }
  auto field = [&](const std::string& method, const std::string& name) {
    return by_name[method].fields().at(name).string_value();
  };
  EXPECT_EQ(field("GetVersion", "kind"), "unary");
  EXPECT_EQ(field("GetVersion", "input_type"), "fedge.v1.GetVersionRequest");
  EXPECT_EQ(field("GetVersion", "output_type"), "fedge.v1.Version");
  EXPECT_EQ(field("WatchEvents", "kind"), "server_stream");
  EXPECT_EQ(field("DownloadVersion", "kind"), "server_stream");
  EXPECT_EQ(field("RegisterModel", "kind"), "client_stream");
  EXPECT_EQ(field("RegisterModel", "input_type"), "fedge.v1.RegisterModelRequest");
}

TEST_F(RestGatewayTest, WatchEventsStreamsOneJsonLinePerEvent) {
  auto res = Post("WatchEvents", "{}");
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  EXPECT_EQ(res->get_header_value("Content-Type"), "application/x-ndjson");
  const std::vector<std::string> lines = Lines(res->body);
  ASSERT_EQ(lines.size(), 3u) << res->body;
  for (int i = 0; i < 3; ++i) {
    v1::Event event;
    ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(lines[i], &event).ok()) << lines[i];
    EXPECT_EQ(event.id(), i + 1);
    EXPECT_EQ(event.type(), "job.started");
    EXPECT_EQ(event.job_id(), "j" + std::to_string(i + 1));
  }
  EXPECT_NE(lines[0].find("\"job_id\""), std::string::npos);
}

TEST_F(RestGatewayTest, StreamRefusedAtOnceAnswersWithItsHttpStatus) {
  auto res = Post("DownloadVersion", R"({"model": "missing"})");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 404);
  EXPECT_EQ(ParseStruct(res->body).fields().at("message").string_value(), "no model missing");
}

TEST_F(RestGatewayTest, ClientLeavingCancelsTheStream) {
  httplib::Request req;
  req.method = "POST";
  req.path = "/v1/admin/DownloadVersion";
  req.body = R"({"model": "endless"})";
  req.set_header("Content-Type", "application/json");
  int lines = 0;
  req.content_receiver = [&](const char* data, size_t size, uint64_t, uint64_t) {
    for (size_t i = 0; i < size; ++i) lines += data[i] == '\n';
    return lines < 3;  // hang up after three chunks
  };
  auto res = client_->send(req);
  EXPECT_GE(lines, 3);
  std::atomic<bool>& cancelled = admin_.download_cancelled;
  EXPECT_TRUE(WaitFor(cancelled, absl::Seconds(20)));
}

TEST_F(RestGatewayTest, RegisterModelTakesTheHeaderAsTheOnlyMessage) {
  auto res =
      Post("RegisterModel", R"({"header": {"name": "x", "builtin": {"architecture": "mlp"}}})",
           {{"X-Fedge-Principal", "bob"}});
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  v1::Version version;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(res->body, &version).ok());
  EXPECT_EQ(version.model(), "x");
  EXPECT_EQ(version.version(), 7);
  EXPECT_EQ(version.creator(), "bob");
}

TEST_F(RestGatewayTest, StopCancelsOpenStreams) {
  std::thread watcher([this] { Post("WatchEvents", R"({"after_id": 5})"); });
  EXPECT_TRUE(WaitFor(admin_.watch_started, absl::Seconds(10)));
  gateway_->Stop();
  EXPECT_TRUE(WaitFor(admin_.watch_cancelled, absl::Seconds(10)));
  watcher.join();
}

}  // namespace
}  // namespace fedge::cloud::api
