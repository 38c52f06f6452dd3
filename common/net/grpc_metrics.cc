#include "common/net/grpc_metrics.h"

#include <chrono>
#include <map>

#include "absl/strings/str_cat.h"
#include "common/metrics/metrics.h"
#include "common/status/grpc_status.h"
#include "google/protobuf/descriptor.h"
#include "grpcpp/support/interceptor.h"

namespace fedge::net {
namespace {

// One method's series. The OK counter and the histogram are looked up once, at start-up.
struct Method {
  std::string name;
  prometheus::Counter* ok;
  prometheus::Histogram* seconds;
};

// The families and the methods they admit; shared by every call's interceptor.
struct Families {
  prometheus::Family<prometheus::Counter>* requests;
  prometheus::Family<prometheus::Histogram>* seconds;
  std::map<std::string, Method, std::less<>> methods;  // by full name
  Method other;
};

class CallMetrics : public grpc::experimental::Interceptor {
 public:
  CallMetrics(const Families* families, const Method* method)
      : families_(families), method_(method), start_(std::chrono::steady_clock::now()) {}

  ~CallMetrics() override {
    if (!recorded_) Record(grpc::StatusCode::CANCELLED);
  }

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_STATUS)) {
      Record(methods->GetSendStatus().error_code());
    }
    methods->Proceed();
  }

 private:
  void Record(grpc::StatusCode code) {
    recorded_ = true;
    if (code == grpc::StatusCode::OK) {
      method_->ok->Increment();
    } else {
      families_->requests->Add({{"method", method_->name}, {"code", GrpcCodeName(code)}})
          .Increment();
    }
    method_->seconds->Observe(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count());
  }

  const Families* families_;
  const Method* method_;
  const std::chrono::steady_clock::time_point start_;
  bool recorded_ = false;
};

class Factory : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit Factory(Families families) : families_(std::move(families)) {}

  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    const char* full = info->method();
    auto it = full == nullptr ? families_.methods.end() : families_.methods.find(full);
    return new CallMetrics(&families_,
                           it == families_.methods.end() ? &families_.other : &it->second);
  }

 private:
  const Families families_;
};

}  // namespace

std::string ShortMethodName(absl::string_view full_method) {
  // "/package.Service/Method": keep the last part of the service name.
  if (!full_method.empty() && full_method.front() == '/') full_method.remove_prefix(1);
  const size_t slash = full_method.find('/');
  if (slash == absl::string_view::npos) return std::string(full_method);
  absl::string_view service = full_method.substr(0, slash);
  const size_t dot = service.rfind('.');
  if (dot != absl::string_view::npos) service.remove_prefix(dot + 1);
  return absl::StrCat(service, ".", full_method.substr(slash + 1));
}

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> MakeGrpcMetrics(
    const std::string& prefix, const std::vector<std::string>& service_full_names) {
  Families f;
  f.requests = &metrics::CounterFamily(absl::StrCat(prefix, "_grpc_requests_total"),
                                       "gRPC calls answered, by method and status code.");
  f.seconds = &metrics::HistogramFamily(absl::StrCat(prefix, "_grpc_request_duration_seconds"),
                                        "Duration of gRPC calls, by method (for streams, the "
                                        "stream's lifetime).");
  auto method = [&f](const std::string& name) {
    return Method{name, &f.requests->Add({{"method", name}, {"code", "OK"}}),
                  &f.seconds->Add({{"method", name}}, metrics::LatencyBuckets())};
  };
  f.other = method("other");
  for (const std::string& name : service_full_names) {
    const google::protobuf::ServiceDescriptor* service =
        google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(name);
    if (service == nullptr) continue;
    for (int i = 0; i < service->method_count(); ++i) {
      const std::string full = absl::StrCat("/", name, "/", service->method(i)->name());
      f.methods.emplace(full, method(ShortMethodName(full)));
    }
  }
  return std::make_unique<Factory>(std::move(f));
}

}  // namespace fedge::net
