#include "cloud/api/rest_gateway.h"

#include <sys/stat.h>

#include <chrono>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <tuple>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "cloud/api/admin_auth.h"
#include "cloud/api/rest_request.h"
#include "common/net/identity.h"
#include "common/status/grpc_status.h"
#include "common/sync/mutex.h"
#include "fedge/v1/admin.pb.h"
#include "glog/logging.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/message.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "grpcpp/client_context.h"
#include "grpcpp/completion_queue.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/impl/codegen/proto_utils.h"
#include "grpcpp/support/byte_buffer.h"
#include "httplib.h"
#include "common/status/status.h"
#include "openssl/err.h"
#include "openssl/pem.h"
#include "openssl/ssl.h"

namespace fedge::cloud::api {
namespace {

using google::protobuf::Message;
using google::protobuf::MethodDescriptor;
using google::protobuf::ServiceDescriptor;
using Serializer = grpc::SerializationTraits<Message>;

constexpr char kServiceName[] = "fedge.v1.Admin";
constexpr char kJson[] = "application/json";
constexpr char kNdjson[] = "application/x-ndjson";

// httplib serves each connection on one pool thread for its whole life, and an open stream
// (WatchEvents) holds its thread, so the pool is larger than httplib's default of 8.
// Each connection holds a worker while it is read, so silent connections cost workers: many
// workers, and short read and keep-alive timeouts, let such connections pass without delaying
// the requests behind them.
constexpr size_t kWorkerThreads = 256;
constexpr int kReadTimeoutSeconds = 2;
// Request bodies are single JSON messages; gRPC refuses larger messages by default anyway.
constexpr size_t kMaxBodyBytes = 4 << 20;
// A server stream whose call fails within this window answers with the mapped HTTP status;
// after it, the 200 and the headers go out and a later failure becomes an error line.
constexpr absl::Duration kFirstMessageWait = absl::Seconds(1);
// How long the content provider waits for a message before handing control back to httplib
// (which checks whether the server is stopping).
constexpr absl::Duration kPollInterval = absl::Milliseconds(200);
// An idle stream writes an empty line this often: a write is the only way to find out that the
// HTTP client went away, and then the gRPC call is cancelled.
constexpr absl::Duration kHeartbeatInterval = absl::Seconds(10);

int HttpStatus(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK:
      return 200;
    case grpc::StatusCode::INVALID_ARGUMENT:
    case grpc::StatusCode::FAILED_PRECONDITION:
    case grpc::StatusCode::OUT_OF_RANGE:
      return 400;
    case grpc::StatusCode::UNAUTHENTICATED:
      return 401;
    case grpc::StatusCode::PERMISSION_DENIED:
      return 403;
    case grpc::StatusCode::NOT_FOUND:
      return 404;
    case grpc::StatusCode::ALREADY_EXISTS:
    case grpc::StatusCode::ABORTED:
      return 409;
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return 429;
    case grpc::StatusCode::CANCELLED:
      return 499;
    case grpc::StatusCode::UNIMPLEMENTED:
      return 501;
    case grpc::StatusCode::UNAVAILABLE:
      return 503;
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return 504;
    default:
      return 500;
  }
}

// Struct to JSON cannot fail: it holds only strings, numbers and nested structs.
std::string StructToJson(const google::protobuf::Struct& s) {
  std::string json;
  const auto status = google::protobuf::util::MessageToJsonString(s, &json);
  DCHECK(status.ok()) << status.ToString();
  return json;
}

google::protobuf::Struct ErrorStruct(const grpc::Status& status) {
  google::protobuf::Struct error;
  auto& fields = *error.mutable_fields();
  fields["code"].set_number_value(static_cast<int>(status.error_code()));
  fields["status"].set_string_value(GrpcCodeName(status.error_code()));
  fields["message"].set_string_value(status.error_message());
  return error;
}

// {"code": N, "status": "NAME", "message": "..."}
void SendError(const grpc::Status& status, httplib::Response& res) {
  res.status = HttpStatus(status.error_code());
  if (status.error_code() == grpc::StatusCode::UNAUTHENTICATED) {
    res.set_header("WWW-Authenticate", "Bearer");
  }
  res.set_content(StructToJson(ErrorStruct(status)), kJson);
}

// A failure after a stream has begun: {"error": {"code": N, "status": "NAME", "message": ...}}.
std::string ErrorLine(const grpc::Status& status) {
  google::protobuf::Struct line;
  *(*line.mutable_fields())["error"].mutable_struct_value() = ErrorStruct(status);
  return StructToJson(line) + "\n";
}

grpc::Status ToJson(const Message& message, std::string* json) {
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = false;
  const auto status = google::protobuf::util::MessageToJsonString(message, json, options);
  if (!status.ok()) {
    return grpc::Status(grpc::StatusCode::INTERNAL,
                        absl::StrCat("encoding ", message.GetTypeName(),
                                     " as JSON: ", status.message().ToString()));
  }
  return grpc::Status::OK;
}

// gRPC refuses metadata values outside printable ASCII; refuse them here with a clear answer.
bool IsValidMetadataValue(absl::string_view value) {
  for (const char c : value) {
    if (c < 0x20 || c > 0x7e) return false;
  }
  return true;
}

const char* MethodKind(const MethodDescriptor& method) {
  if (method.client_streaming() && method.server_streaming()) return "bidi_stream";
  if (method.client_streaming()) return "client_stream";
  if (method.server_streaming()) return "server_stream";
  return "unary";
}

// The contexts of the calls in flight, so that Stop() can cancel them: a blocked unary call or
// an open stream would otherwise keep an httplib worker, and so Stop(), waiting.
class CallRegistry {
 public:
  // Registers a context for as long as it lives, unless the gateway is stopping.
  class Entry {
   public:
    Entry(CallRegistry* registry, grpc::ClientContext* context)
        : registry_(registry), context_(context), registered_(registry->Add(context)) {}
    ~Entry() {
      if (registered_) registry_->Remove(context_);
    }
    Entry(const Entry&) = delete;
    Entry& operator=(const Entry&) = delete;
    bool registered() const { return registered_; }

   private:
    CallRegistry* const registry_;
    grpc::ClientContext* const context_;
    const bool registered_;
  };

  // Cancels every call in flight and refuses new ones.
  void CancelAll() {
    MutexLock lock(&mu_);
    stopping_ = true;
    for (grpc::ClientContext* context : contexts_) context->TryCancel();
  }

 private:
  bool Add(grpc::ClientContext* context) {
    MutexLock lock(&mu_);
    if (stopping_) return false;
    contexts_.insert(context);
    return true;
  }
  void Remove(grpc::ClientContext* context) {
    MutexLock lock(&mu_);
    contexts_.erase(context);
  }

  Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::set<grpc::ClientContext*> contexts_ ABSL_GUARDED_BY(mu_);
};

grpc::Status Stopping() {
  return grpc::Status(grpc::StatusCode::UNAVAILABLE, "the REST gateway is stopping");
}

// A unary call through the generic callback API, waited for on this thread. The context's
// deadline (or Stop()'s cancellation) bounds the wait.
grpc::Status CallUnary(grpc::GenericStub* stub, const std::string& path,
                       grpc::ClientContext* context, const grpc::ByteBuffer& request,
                       grpc::ByteBuffer* response) {
  struct Done {
    Mutex mu;
    CondVar cv;
    bool done ABSL_GUARDED_BY(mu) = false;
    grpc::Status status ABSL_GUARDED_BY(mu);
  };
  // Shared with the reaction, which may still be unlocking when this thread wakes up.
  auto done = std::make_shared<Done>();
  stub->UnaryCall(context, path, grpc::StubOptions(), &request, response,
                  [done](grpc::Status status) {
                    MutexLock lock(&done->mu);
                    done->status = std::move(status);
                    done->done = true;
                    done->cv.SignalAll();
                  });
  MutexLock lock(&done->mu);
  while (!done->done) done->cv.Wait(&done->mu);
  return done->status;
}

// A streaming call (client-, server- or bidi-streaming: the generic stub calls them all as
// bidi) that sends one request message, half-closes, and reads what comes back. It runs on its
// own completion queue with at most one operation outstanding, and is driven by one thread at
// a time: the handler, then httplib's content provider on the same worker thread. The
// destructor cancels the call if it has not finished and drains the queue.
class StreamCall {
 public:
  enum class Result { kMessage, kEnd, kTimeout };

  // nullptr if the gateway is stopping.
  static std::unique_ptr<StreamCall> Start(grpc::GenericStub* stub, const std::string& path,
                                           std::unique_ptr<grpc::ClientContext> context,
                                           CallRegistry* registry,
                                           const grpc::ByteBuffer& request) {
    std::unique_ptr<StreamCall> call(new StreamCall(std::move(context), registry));
    if (!call->entry_.registered()) return nullptr;
    call->Begin(stub, path, request);
    return call;
  }

  ~StreamCall() {
    if (call_ != nullptr && !finished_) {
      context_->TryCancel();
      if (read_pending_) Await(&read_pending_);
      Finish();
    }
    cq_.Shutdown();
    void* tag;
    bool ok;
    while (cq_.Next(&tag, &ok)) {
    }
  }

  StreamCall(const StreamCall&) = delete;
  StreamCall& operator=(const StreamCall&) = delete;

  // Waits up to `wait` for the next message. kEnd: the stream is over, and status() says how.
  Result Read(absl::Duration wait, grpc::ByteBuffer* message) {
    if (finished_) return Result::kEnd;
    if (!read_pending_) {
      read_pending_ = true;
      call_->Read(&buffer_, &read_pending_);
    }
    void* tag = nullptr;
    bool ok = false;
    if (wait == absl::InfiniteDuration()) {
      CHECK(cq_.Next(&tag, &ok));
    } else {
      const auto deadline = std::chrono::system_clock::now() + absl::ToChronoMilliseconds(wait);
      const grpc::CompletionQueue::NextStatus next = cq_.AsyncNext(&tag, &ok, deadline);
      if (next == grpc::CompletionQueue::TIMEOUT) return Result::kTimeout;
      CHECK_EQ(next, grpc::CompletionQueue::GOT_EVENT) << "queue shut down under a live call";
    }
    CHECK_EQ(tag, &read_pending_);
    read_pending_ = false;
    if (!ok) {
      Finish();
      return Result::kEnd;
    }
    message->Swap(&buffer_);
    buffer_.Clear();
    return Result::kMessage;
  }

  // The call's final status, once Read() has answered kEnd.
  const grpc::Status& status() const { return status_; }

 private:
  StreamCall(std::unique_ptr<grpc::ClientContext> context, CallRegistry* registry)
      : context_(std::move(context)), entry_(registry, context_.get()) {}

  void Begin(grpc::GenericStub* stub, const std::string& path, const grpc::ByteBuffer& request) {
    call_ = stub->PrepareCall(context_.get(), path, &cq_);
    bool started = false;
    call_->StartCall(&started);
    if (!Await(&started)) {
      Finish();
      return;
    }
    // A failed write means the server has ended the call; the reads that follow find out how.
    bool written = false;
    call_->WriteLast(request, grpc::WriteOptions(), &written);
    Await(&written);
  }

  // Waits for the one outstanding operation, whose tag is `tag`; returns its ok.
  bool Await(void* tag) {
    void* got = nullptr;
    bool ok = false;
    CHECK(cq_.Next(&got, &ok));
    CHECK_EQ(got, tag);
    return ok;
  }

  void Finish() {
    bool finished = false;
    call_->Finish(&status_, &finished);
    Await(&finished);
    finished_ = true;
  }

  // Destroyed last: the call lives in the context's arena.
  std::unique_ptr<grpc::ClientContext> context_;
  CallRegistry::Entry entry_;
  grpc::CompletionQueue cq_;
  std::unique_ptr<grpc::GenericClientAsyncReaderWriter> call_;
  grpc::ByteBuffer buffer_;
  bool read_pending_ = false;  // its address is the read's tag
  bool finished_ = false;
  grpc::Status status_;
};

// Writes a server stream out as NDJSON through httplib's chunked content provider.
class NdjsonStream {
 public:
  // `first`, if has_first, is a message already read from the call.
  NdjsonStream(std::unique_ptr<StreamCall> call, const Message& prototype, grpc::ByteBuffer first,
               bool has_first)
      : call_(std::move(call)),
        message_(prototype.New()),
        first_(std::move(first)),
        has_first_(has_first) {}

  // One step of the content provider: writes at most one line. False tells httplib to give up
  // on the connection (the client went away); the gRPC call is then cancelled when httplib
  // destroys the provider.
  bool Pump(httplib::DataSink& sink) {
    grpc::ByteBuffer buffer;
    if (has_first_) {
      has_first_ = false;
      buffer.Swap(&first_);
    } else {
      switch (call_->Read(kPollInterval, &buffer)) {
        case StreamCall::Result::kTimeout:
          if (absl::Now() - last_write_ < kHeartbeatInterval) return true;
          last_write_ = absl::Now();
          return sink.write("\n", 1);
        case StreamCall::Result::kEnd:
          if (!call_->status().ok() && !WriteLine(ErrorLine(call_->status()), sink)) return false;
          sink.done();
          return true;
        case StreamCall::Result::kMessage:
          break;
      }
    }
    std::string json;
    grpc::Status status = Serializer::Deserialize(&buffer, message_.get());
    if (status.ok()) status = ToJson(*message_, &json);
    if (!status.ok()) {
      // Not resumable: end the stream here; the call is cancelled when the provider goes.
      if (!WriteLine(ErrorLine(status), sink)) return false;
      sink.done();
      return true;
    }
    json.push_back('\n');
    return WriteLine(json, sink);
  }

 private:
  bool WriteLine(const std::string& line, httplib::DataSink& sink) {
    last_write_ = absl::Now();
    return sink.write(line.data(), line.size());
  }

  std::unique_ptr<StreamCall> call_;
  std::unique_ptr<Message> message_;
  grpc::ByteBuffer first_;
  bool has_first_;
  absl::Time last_write_ = absl::Now();
};

}  // namespace

namespace {

// The certificate and key an HTTPS listener presents, re-read when the certificate file
// changes (checked at most once a second), so a rotated pair serves new connections while
// open ones carry on.
class CertReloader {
 public:
  CertReloader(std::string cert_path, std::string key_path)
      : cert_path_(std::move(cert_path)), key_path_(std::move(key_path)) {}
  ~CertReloader() {
    X509_free(cert_);
    EVP_PKEY_free(key_);
  }

  // FAILED_PRECONDITION naming the file that cannot be read or the pair that does not match.
  absl::Status Load() {
    MutexLock lock(&mu_);
    return LoadLocked();
  }

  // SSL_CTX_set_cert_cb: sets the pair on each new connection.
  static int Callback(SSL* ssl, void* arg) {
    auto* self = static_cast<CertReloader*>(arg);
    MutexLock lock(&self->mu_);
    const absl::Time now = absl::Now();
    if (now - self->checked_ > absl::Seconds(1)) {
      self->checked_ = now;
      struct stat st;
      if (::stat(self->cert_path_.c_str(), &st) == 0 && Stamp(st) != self->stamp_) {
        absl::Status reloaded = self->LoadLocked();
        if (!reloaded.ok()) LOG(WARNING) << "keeping the previous REST certificate: " << reloaded;
      }
    }
    return SSL_use_certificate(ssl, self->cert_) == 1 && SSL_use_PrivateKey(ssl, self->key_) == 1
               ? 1
               : 0;
  }

 private:
  // Changes when the file is replaced (a rename gives a new inode) or rewritten.
  static std::tuple<ino_t, time_t, long> Stamp(const struct stat& st) {
    return {st.st_ino, st.st_mtim.tv_sec, st.st_mtim.tv_nsec};
  }

  absl::Status LoadLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    struct stat st;
    if (::stat(cert_path_.c_str(), &st) != 0) {
      return absl::FailedPreconditionError(absl::StrCat("cannot read ", cert_path_));
    }
    std::unique_ptr<BIO, decltype(&BIO_free)> cert_bio(BIO_new_file(cert_path_.c_str(), "r"),
                                                       &BIO_free);
    std::unique_ptr<BIO, decltype(&BIO_free)> key_bio(BIO_new_file(key_path_.c_str(), "r"),
                                                      &BIO_free);
    X509* cert = cert_bio ? PEM_read_bio_X509(cert_bio.get(), nullptr, nullptr, nullptr) : nullptr;
    EVP_PKEY* key =
        key_bio ? PEM_read_bio_PrivateKey(key_bio.get(), nullptr, nullptr, nullptr) : nullptr;
    if (cert == nullptr || key == nullptr || X509_check_private_key(cert, key) != 1) {
      X509_free(cert);
      EVP_PKEY_free(key);
      ERR_clear_error();
      return absl::FailedPreconditionError(absl::StrCat(
          "the REST listener cannot use ", cert_path_, " with ", key_path_,
          ": unreadable, not PEM, or not a matching certificate and key"));
    }
    X509_free(cert_);
    EVP_PKEY_free(key_);
    cert_ = cert;
    key_ = key;
    stamp_ = Stamp(st);
    return absl::OkStatus();
  }

  const std::string cert_path_;
  const std::string key_path_;
  Mutex mu_;
  X509* cert_ ABSL_GUARDED_BY(mu_) = nullptr;
  EVP_PKEY* key_ ABSL_GUARDED_BY(mu_) = nullptr;
  std::tuple<ino_t, time_t, long> stamp_ ABSL_GUARDED_BY(mu_);
  absl::Time checked_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
};

}  // namespace

struct RestGateway::Impl {
  explicit Impl(Options opts)
      : options(std::move(opts)),
        service(
            google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(kServiceName)),
        stub(options.admin_channel) {}

  void ListMethods(httplib::Response& res) const {
    google::protobuf::Struct list;
    auto& fields = *list.mutable_fields();
    fields["service"].set_string_value(service->full_name());
    auto* methods = fields["methods"].mutable_list_value();
    for (int i = 0; i < service->method_count(); ++i) {
      const MethodDescriptor* method = service->method(i);
      auto& m = *methods->add_values()->mutable_struct_value()->mutable_fields();
      m["name"].set_string_value(method->name());
      m["kind"].set_string_value(MethodKind(*method));
      m["input_type"].set_string_value(method->input_type()->full_name());
      m["output_type"].set_string_value(method->output_type()->full_name());
      m["path"].set_string_value(absl::StrCat("/v1/admin/", method->name()));
    }
    res.set_content(StructToJson(list), kJson);
  }

  void Call(const httplib::Request& req, httplib::Response& res) {
    const auto method_or = FindAdminMethod(req.matches[1].str());
    if (!method_or.ok()) {
      SendError(ToGrpcStatus(method_or.status()), res);
      return;
    }
    const MethodDescriptor* method = *method_or;
    auto request_or = ParseRequestBody(*method, req.body);
    if (!request_or.ok()) {
      SendError(ToGrpcStatus(request_or.status()), res);
      return;
    }
    std::unique_ptr<Message> request = *std::move(request_or);
    auto* factory = google::protobuf::MessageFactory::generated_factory();

    auto context = std::make_unique<grpc::ClientContext>();
    if (req.has_header("X-Fedge-Principal")) {
      const std::string principal = req.get_header_value("X-Fedge-Principal");
      if (!IsValidMetadataValue(principal)) {
        SendError(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                               "X-Fedge-Principal must be printable ASCII"),
                  res);
        return;
      }
      context->AddMetadata(net::kPrincipalMetadata, principal);
    }
    // The token travels on as gRPC metadata and is checked by the Admin service itself, the
    // same way as a gRPC client's.
    if (req.has_header("Authorization")) {
      const std::string authorization = req.get_header_value("Authorization");
      if (!IsValidMetadataValue(authorization)) {
        SendError(grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                               "the Authorization header must be printable ASCII: "
                               "`Authorization: Bearer <token>`"),
                  res);
        return;
      }
      context->AddMetadata(kAuthorizationMetadata, authorization);
    }
    // Server streams have no deadline: WatchEvents runs until the client leaves or Stop().
    if (!method->server_streaming()) {
      context->set_deadline(std::chrono::system_clock::now() +
                            std::chrono::seconds(options.timeout_seconds));
    }

    grpc::ByteBuffer request_buffer;
    bool own_buffer = false;
    grpc::Status status = Serializer::Serialize(*request, &request_buffer, &own_buffer);
    if (!status.ok()) {
      SendError(status, res);
      return;
    }
    const std::string path = absl::StrCat("/", service->full_name(), "/", method->name());
    const Message& response_prototype = *factory->GetPrototype(method->output_type());

    if (method->server_streaming()) {
      Stream(path, std::move(context), request_buffer, response_prototype, res);
      return;
    }

    grpc::ByteBuffer response_buffer;
    if (method->client_streaming()) {
      status = CallClientStream(path, std::move(context), request_buffer, &response_buffer);
    } else {
      CallRegistry::Entry entry(&calls, context.get());
      status = entry.registered()
                   ? CallUnary(&stub, path, context.get(), request_buffer, &response_buffer)
                   : Stopping();
    }
    std::string json;
    if (status.ok()) {
      std::unique_ptr<Message> response(response_prototype.New());
      status = Serializer::Deserialize(&response_buffer, response.get());
      if (status.ok()) status = ToJson(*response, &json);
    }
    if (!status.ok()) {
      SendError(status, res);
      return;
    }
    res.set_content(json, kJson);
  }

  // A client stream of exactly one message (for RegisterModel: the header of a built-in model).
  grpc::Status CallClientStream(const std::string& path,
                                std::unique_ptr<grpc::ClientContext> context,
                                const grpc::ByteBuffer& request, grpc::ByteBuffer* response) {
    std::unique_ptr<StreamCall> call =
        StreamCall::Start(&stub, path, std::move(context), &calls, request);
    if (call == nullptr) return Stopping();
    int messages = 0;
    grpc::ByteBuffer message;
    while (call->Read(absl::InfiniteDuration(), &message) == StreamCall::Result::kMessage) {
      if (messages++ == 0) response->Swap(&message);
    }
    if (call->status().ok() && messages != 1) {
      return grpc::Status(grpc::StatusCode::INTERNAL,
                          absl::StrCat(path, " answered ", messages, " messages instead of one"));
    }
    return call->status();
  }

  void Stream(const std::string& path, std::unique_ptr<grpc::ClientContext> context,
              const grpc::ByteBuffer& request, const Message& response_prototype,
              httplib::Response& res) {
    std::unique_ptr<StreamCall> call =
        StreamCall::Start(&stub, path, std::move(context), &calls, request);
    if (call == nullptr) {
      SendError(Stopping(), res);
      return;
    }
    // Wait briefly for the first message, so that a call refused at once (a bad request, an
    // unknown model) answers with its HTTP status rather than a 200 and an error line.
    grpc::ByteBuffer first;
    switch (call->Read(kFirstMessageWait, &first)) {
      case StreamCall::Result::kEnd:
        if (call->status().ok()) {
          res.set_content("", kNdjson);
        } else {
          SendError(call->status(), res);
        }
        return;
      case StreamCall::Result::kMessage:
      case StreamCall::Result::kTimeout:
        break;
    }
    const bool has_first = first.Valid();
    auto stream = std::make_shared<NdjsonStream>(std::move(call), response_prototype,
                                                 std::move(first), has_first);
    res.set_chunked_content_provider(kNdjson, [stream](size_t /*offset*/, httplib::DataSink& sink) {
      return stream->Pump(sink);
    });
  }

  const Options options;
  const ServiceDescriptor* const service;
  grpc::GenericStub stub;
  CallRegistry calls;
  std::unique_ptr<CertReloader> certs;  // null: plain HTTP
  std::unique_ptr<httplib::Server> server_ptr;
  httplib::Server& server() { return *server_ptr; }
  std::thread thread;
  int port = 0;
  Mutex stop_mu;
  bool stopped ABSL_GUARDED_BY(stop_mu) = false;
};

absl::StatusOr<std::unique_ptr<RestGateway>> RestGateway::Start(Options options) {
  if (options.admin_channel == nullptr) {
    return absl::InvalidArgumentError("RestGateway needs the Admin server's channel");
  }
  if (options.timeout_seconds <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("timeout_seconds must be positive, not ", options.timeout_seconds));
  }
  // Referencing a generated message links admin.pb.cc in, which registers the service's
  // descriptor with the generated pool.
  (void)v1::ListModelsRequest::descriptor();
  auto impl = std::make_unique<Impl>(std::move(options));
  if (impl->service == nullptr) {
    return absl::InternalError(absl::StrCat("no descriptor for ", kServiceName));
  }
  Impl* const self = impl.get();
  if (impl->options.tls_cert_file.empty()) {
    impl->server_ptr = std::make_unique<httplib::Server>();
  } else {
    impl->certs = std::make_unique<CertReloader>(impl->options.tls_cert_file,
                                                 impl->options.tls_key_file);
    FEDGE_RETURN_IF_ERROR(impl->certs->Load());
    CertReloader* certs = impl->certs.get();
    auto ssl = std::make_unique<httplib::SSLServer>([certs](SSL_CTX& ctx) {
      SSL_CTX_set_min_proto_version(&ctx, TLS1_2_VERSION);
      SSL_CTX_set_cert_cb(&ctx, &CertReloader::Callback, certs);
      return true;
    });
    if (!ssl->is_valid()) return absl::InternalError("cannot set up the REST gateway's TLS");
    impl->server_ptr = std::move(ssl);
  }
  httplib::Server& server = impl->server();
  server.new_task_queue = [] { return new httplib::ThreadPool(kWorkerThreads); };
  server.set_payload_max_length(kMaxBodyBytes);
  server.set_read_timeout(kReadTimeoutSeconds, 0);
  server.set_keep_alive_timeout(kReadTimeoutSeconds);
  server.Get("/v1/admin",
             [self](const httplib::Request&, httplib::Response& res) { self->ListMethods(res); });
  server.Post(R"(/v1/admin/([^/]*))", [self](const httplib::Request& req, httplib::Response& res) {
    self->Call(req, res);
  });

  const std::string& host = impl->options.host;
  if (impl->options.port == 0) {
    impl->port = server.bind_to_any_port(host);
    if (impl->port < 0) {
      return absl::UnavailableError(absl::StrCat("REST gateway cannot bind ", host));
    }
  } else {
    if (!server.bind_to_port(host, impl->options.port)) {
      return absl::UnavailableError(
          absl::StrCat("REST gateway cannot bind ", host, ":", impl->options.port));
    }
    impl->port = impl->options.port;
  }
  impl->thread = std::thread([self] { self->server().listen_after_bind(); });
  // httplib's stop() does nothing until the accept loop runs, so wait for it: a Stop() right
  // after Start() must not be lost.
  const absl::Time give_up = absl::Now() + absl::Seconds(10);
  while (!server.is_running()) {
    if (absl::Now() > give_up) {
      LOG(ERROR) << "REST gateway did not start listening";
      break;
    }
    absl::SleepFor(absl::Milliseconds(1));
  }
  LOG(INFO) << "REST gateway for " << kServiceName << " on " << (impl->certs ? "https" : "http")
            << "://" << host << ":" << impl->port;
  return std::unique_ptr<RestGateway>(new RestGateway(std::move(impl)));
}

RestGateway::RestGateway(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

RestGateway::~RestGateway() { Stop(); }

int RestGateway::port() const { return impl_->port; }

void RestGateway::Stop() {
  MutexLock lock(&impl_->stop_mu);
  if (impl_->stopped) return;
  impl_->stopped = true;
  // Cancelling first ends blocked unary calls and open streams, so httplib's workers finish.
  impl_->calls.CancelAll();
  impl_->server().stop();
  if (impl_->thread.joinable()) impl_->thread.join();
}

}  // namespace fedge::cloud::api
