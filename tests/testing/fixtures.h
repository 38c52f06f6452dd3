#ifndef FEDGE_TESTS_TESTING_FIXTURES_H_
#define FEDGE_TESTS_TESTING_FIXTURES_H_

#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "fedge/v1/admin.grpc.pb.h"
#include "fedge/v1/fleet.grpc.pb.h"
#include "grpcpp/channel.h"
#include "grpcpp/client_context.h"

namespace fedge::testing {

// A fresh directory under the test's temp dir, removed by the destructor.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// A client context with a deadline, and the node identity if given.
std::unique_ptr<grpc::ClientContext> Context(const std::string& node_id = "",
                                             absl::Duration timeout = absl::Seconds(30));

// The built-in synthetic task's header for RegisterModel (mlp unless told otherwise).
v1::RegisterModelHeader SyntheticModelHeader(const std::string& name,
                                             const std::string& architecture = "mlp");

// Registers a model from a header (and an optional archive) over Admin, with
// `authorization: Bearer <token>` if a token is given.
absl::StatusOr<v1::Version> Register(v1::Admin::Stub* admin, const v1::RegisterModelHeader& header,
                                     const std::string& archive = "",
                                     const std::string& token = "");

// Polls GetJob until the job has finished or the timeout passes.
absl::StatusOr<v1::Job> WaitForJob(v1::Admin::Stub* admin, const std::string& id,
                                   absl::Duration timeout);

// The rows of `sql` over the SQLite file at `path`, opened read-only with SQLite itself (not
// through fedge's code), each column as text. A failure is a test failure.
std::vector<std::vector<std::string>> QueryFile(const std::string& path, const std::string& sql);

// Events whose type matches `types` ("x." is a prefix), oldest first, from Admin.ListEvents.
std::vector<v1::Event> ListEvents(v1::Admin::Stub* admin, const std::vector<std::string>& types);

// Every job the coordinator knows, from Admin.ListJobs.
std::vector<v1::Job> ListJobs(v1::Admin::Stub* admin);

// Downloads a version's archive over Admin.
absl::StatusOr<std::string> DownloadVersion(v1::Admin::Stub* admin, const std::string& model,
                                            int64_t version);

// Uploads delta (F32) as the update for `task`, as node `node_id`, with `metrics` in the
// header (e.g. "epochs" for partial work).
grpc::Status SendUpdate(v1::Fleet::Stub* stub, const std::string& node_id,
                        const v1::TrainTask& task, const std::vector<float>& delta,
                        int64_t num_samples, const std::map<std::string, double>& metrics = {});
// The header of an update for `task` carrying `payload` (its size and digest).
v1::UpdateHeader HeaderFor(const v1::TrainTask& task, const std::string& payload,
                           v1::Encoding encoding, int64_t num_samples);
// Uploads an already encoded payload, declaring `encoding` in the header.
grpc::Status SendPayload(v1::Fleet::Stub* stub, const std::string& node_id,
                         const v1::TrainTask& task, const std::string& payload,
                         v1::Encoding encoding, int64_t num_samples,
                         const std::map<std::string, double>& metrics = {});

// The value of one series in this process's metrics, e.g.
// `fedge_cloud_calls_limited_total{limit="rate"}`; -1 if the series does not exist. In-process
// coordinators and edges share the registry, so tests read their metrics this way.
double MetricValue(const std::string& series);

// A hand-driven edge: opens a Session as `node_id`, says hello, and hands over the cloud's
// messages one at a time. Tests use it to send what no well-behaved edge would.
class FakeEdge {
 public:
  // A non-empty outbox_epoch lets the edge send outbox messages (message_id set).
  // `hello` is merged into the Hello it sends (labels, cores, memory).
  FakeEdge(std::shared_ptr<grpc::Channel> channel, const std::string& node_id,
           const std::map<std::string, v1::VersionRef>& active = {},
           const std::string& outbox_epoch = "", const v1::Hello& hello = v1::Hello());
  ~FakeEdge();
  // Waits for the next message of the cloud; false at end of stream.
  bool Next(v1::CloudMessage* message);
  // Sends a message on the session (one writer at a time).
  bool Send(const v1::EdgeMessage& message);
  // Waits for the next TrainTask, skipping other messages.
  absl::StatusOr<v1::TrainTask> NextTask();
  v1::Fleet::Stub* stub() { return stub_.get(); }
  const std::string& node_id() const { return node_id_; }
  // Cancels the session; a thread blocked in Next() returns false. Call Close() afterwards.
  void Cancel() { context_.TryCancel(); }
  // Ends the session (cancelling it unless the cloud already ended it) and returns the final
  // status. Must not run while another thread is in Next().
  grpc::Status Close();

 private:
  std::string node_id_;
  std::unique_ptr<v1::Fleet::Stub> stub_;
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReaderWriter<v1::EdgeMessage, v1::CloudMessage>> stream_;
  bool closed_ = false;
  std::mutex write_mu_;
  bool ended_ = false;  // the cloud's side of the stream is over
  grpc::Status final_status_;
};

}  // namespace fedge::testing

#endif  // FEDGE_TESTS_TESTING_FIXTURES_H_
