// A real edge Agent (runtime, outbox, training) over real gRPC on loopback against a scripted
// Fleet server, in the ways a node loses the cloud around a training task: a task that arrives
// after its deadline, an upload the cloud cannot take before the deadline, and an upload that
// breaks midway and resumes from the offset the cloud holds.

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/data/synthetic.h"
#include "common/net/servers.h"
#include "common/sync/mutex.h"
#include "common/tensor/flat.h"
#include "common/tensor/sha256.h"
#include "common/torch/model.h"
#include "edge/agent/agent.h"
#include "edge/outbox/outbox.h"
#include "edge/runtime/runtime.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "tests/testing/fixtures.h"

namespace fedge::edge::agent {
namespace {

constexpr int64_t kChunk = 1 << 20;
constexpr absl::Duration kWait = absl::Seconds(30);

// Polls `cond` until it holds or `timeout` passes; returns whether it held.
bool WaitUntil(const std::function<bool()>& cond, absl::Duration timeout = kWait) {
  const absl::Time end = absl::Now() + timeout;
  while (!cond()) {
    if (absl::Now() > end) return false;
    absl::SleepFor(absl::Milliseconds(10));
  }
  return true;
}

// A small built-in model for the synthetic task, with its contract, as the registry stores it.
struct BaseModel {
  std::string archive;
  std::string sha256;
  std::string schema_hash;
};

// The node's local data: a few rows of one synthetic site.
data::Dataset TrainingData() { return data::GenerateSite({}, 0, 64); }

BaseModel MakeBaseModel() {
  torchlib::BuiltinOptions opt;
  opt.num_features = static_cast<int64_t>(data::SyntheticFeatureNames({}).size());
  opt.num_classes = static_cast<int64_t>(data::SyntheticLabels().size());
  opt.hidden = {8};
  opt.seed = 1;
  // Normalized in the module, as a registered model is, so fine-tuning stays finite.
  const data::FeatureStats stats = data::ComputeStats(TrainingData());
  opt.norm_mean = stats.mean;
  opt.norm_std = stats.std;
  auto model = torchlib::Model::Builtin(opt);
  EXPECT_TRUE(model.ok()) << model.status();
  v1::ModelContract contract;
  for (const auto& f : data::SyntheticFeatureNames({})) contract.add_feature_names(f);
  for (const auto& l : data::SyntheticLabels()) contract.add_labels(l);
  std::string json;
  (void)google::protobuf::util::MessageToJsonString(contract, &json);
  (*model)->SetExtraFile(torchlib::kContractFile, json);
  BaseModel base;
  base.archive = *(*model)->Serialize();
  base.sha256 = Sha256Hex(base.archive);
  base.schema_hash = (*model)->schema().Hash();
  return base;
}

// The cloud side, scripted: Session says hello, sends the scripted tasks on the first session,
// records every EdgeMessage and acknowledges outbox messages; DownloadModel serves the base
// archive; UploadUpdate and UploadOffset behave as the test sets `upload`.
class ScriptedFleet : public v1::Fleet::Service {
 public:
  enum class Upload {
    kAccept,      // keeps every upload
    kOffline,     // every UploadUpdate (and UploadOffset) answers UNAVAILABLE
    kBreakFirst,  // the first UploadUpdate keeps half the payload, then the link breaks
  };

  struct Attempt {
    absl::Time at;
    int64_t first_chunk_offset = -1;  // -1: no chunk arrived
  };

  ScriptedFleet(BaseModel base, std::vector<v1::TrainTask> tasks, Upload upload)
      : base_(std::move(base)), tasks_(std::move(tasks)), upload_(upload) {}

  grpc::Status Session(
      grpc::ServerContext*,
      grpc::ServerReaderWriter<v1::CloudMessage, v1::EdgeMessage>* stream) override {
    v1::EdgeMessage in;
    if (!stream->Read(&in) || !in.has_hello()) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "the first message is a Hello");
    }
    bool first_session;
    uint64_t applied;
    {
      MutexLock lock(&mu_);
      received_.push_back(in);
      first_session = !tasks_sent_;
      tasks_sent_ = true;
      applied = applied_;
    }
    v1::CloudMessage ack;
    ack.mutable_hello_ack()->set_cloud_time_unix_ms(absl::ToUnixMillis(absl::Now()));
    ack.mutable_hello_ack()->set_heartbeat_interval_ms(1000);
    ack.mutable_hello_ack()->set_applied_message_id(applied);
    if (!stream->Write(ack)) return grpc::Status::OK;
    if (first_session) {
      for (const v1::TrainTask& task : tasks_) {
        v1::CloudMessage msg;
        *msg.mutable_train_task() = task;
        if (!stream->Write(msg)) return grpc::Status::OK;
      }
    }
    while (stream->Read(&in)) {
      {
        MutexLock lock(&mu_);
        received_.push_back(in);
        if (in.message_id() > applied_) applied_ = in.message_id();
      }
      if (in.message_id() > 0) {
        v1::CloudMessage applied_ack;
        applied_ack.mutable_ack()->set_applied_message_id(in.message_id());
        if (!stream->Write(applied_ack)) break;
      }
    }
    return grpc::Status::OK;
  }

  // As cloud/api/blob_stream.cc: chunks from the offset, the first carrying size and digest.
  grpc::Status DownloadModel(grpc::ServerContext*, const v1::DownloadRequest* request,
                             grpc::ServerWriter<v1::Chunk>* writer) override {
    {
      MutexLock lock(&mu_);
      ++downloads_;
    }
    if (request->sha256() != base_.sha256) {
      return grpc::Status(grpc::StatusCode::NOT_FOUND, "no such artifact");
    }
    const int64_t size = static_cast<int64_t>(base_.archive.size());
    if (request->offset() < 0 || request->offset() > size) {
      return grpc::Status(grpc::StatusCode::OUT_OF_RANGE, "offset outside the artifact");
    }
    bool first = true;
    for (int64_t off = request->offset(); off < size || first; off += kChunk) {
      v1::Chunk chunk;
      chunk.set_offset(off);
      chunk.set_data(base_.archive.substr(static_cast<size_t>(off), kChunk));
      if (first) {
        chunk.set_total_size(size);
        chunk.set_sha256(base_.sha256);
        first = false;
      }
      if (!writer->Write(chunk)) return grpc::Status(grpc::StatusCode::CANCELLED, "client gone");
    }
    return grpc::Status::OK;
  }

  grpc::Status UploadUpdate(grpc::ServerContext*, grpc::ServerReader<v1::UploadRequest>* reader,
                            v1::UploadResponse* response) override {
    v1::UploadRequest msg;
    if (!reader->Read(&msg) || !msg.has_header()) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "the first message is a header");
    }
    const v1::UpdateHeader header = msg.header();
    size_t attempt;
    std::string held;
    {
      MutexLock lock(&mu_);
      attempt = attempts_.size();
      attempts_.push_back({absl::Now(), -1});
      if (partial_key_ == Key(header)) held = partial_;
    }
    if (upload_ == Upload::kOffline) {
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, "the cloud is offline");
    }
    const bool break_now = upload_ == Upload::kBreakFirst && attempt == 0;
    const int64_t keep = header.total_size() / 2;
    while (reader->Read(&msg)) {
      if (!msg.has_chunk()) {
        return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "a second header");
      }
      const v1::Chunk& chunk = msg.chunk();
      {
        MutexLock lock(&mu_);
        if (attempts_[attempt].first_chunk_offset < 0) {
          attempts_[attempt].first_chunk_offset = chunk.offset();
        }
      }
      if (chunk.offset() != static_cast<int64_t>(held.size())) {
        return grpc::Status(
            grpc::StatusCode::FAILED_PRECONDITION,
            absl::StrCat("chunk at ", chunk.offset(), "; ", held.size(), " bytes are held"));
      }
      held += chunk.data();
      if (break_now && static_cast<int64_t>(held.size()) >= keep) {
        // What the cloud wrote of the stream before the link broke.
        held.resize(static_cast<size_t>(keep));
        MutexLock lock(&mu_);
        partial_key_ = Key(header);
        partial_ = held;
        return grpc::Status(grpc::StatusCode::UNAVAILABLE, "the link broke");
      }
    }
    if (static_cast<int64_t>(held.size()) != header.total_size() ||
        Sha256Hex(held) != header.sha256()) {
      return grpc::Status(grpc::StatusCode::DATA_LOSS, "the payload fails its size or digest");
    }
    MutexLock lock(&mu_);
    partial_key_.clear();
    partial_.clear();
    uploaded_header_ = header;
    uploaded_ = held;
    response->set_received_bytes(static_cast<int64_t>(held.size()));
    return grpc::Status::OK;
  }

  grpc::Status UploadOffset(grpc::ServerContext*, const v1::UploadOffsetRequest* request,
                            v1::UploadOffsetResponse* response) override {
    MutexLock lock(&mu_);
    ++offset_calls_;
    if (upload_ == Upload::kOffline) {
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, "the cloud is offline");
    }
    if (partial_key_ == absl::StrCat(request->task_id(), "/", request->sha256())) {
      response->set_received_bytes(static_cast<int64_t>(partial_.size()));
    }
    return grpc::Status::OK;
  }

  // The task's TaskStatus in `state`, once received.
  std::optional<v1::EdgeMessage> TaskStatus(const std::string& task_id, v1::TaskState state) {
    MutexLock lock(&mu_);
    for (const v1::EdgeMessage& m : received_) {
      if (m.has_task_status() && m.task_status().task_id() == task_id &&
          m.task_status().state() == state) {
        return m;
      }
    }
    return std::nullopt;
  }
  // The task's first TASK_UPLOADED or TASK_FAILED status, once received.
  std::optional<v1::EdgeMessage> Outcome(const std::string& task_id) {
    MutexLock lock(&mu_);
    for (const v1::EdgeMessage& m : received_) {
      if (m.has_task_status() && m.task_status().task_id() == task_id &&
          (m.task_status().state() == v1::TASK_UPLOADED ||
           m.task_status().state() == v1::TASK_FAILED)) {
        return m;
      }
    }
    return std::nullopt;
  }
  int downloads() {
    MutexLock lock(&mu_);
    return downloads_;
  }
  std::vector<Attempt> attempts() {
    MutexLock lock(&mu_);
    return attempts_;
  }
  int offset_calls() {
    MutexLock lock(&mu_);
    return offset_calls_;
  }
  std::string uploaded() {
    MutexLock lock(&mu_);
    return uploaded_;
  }
  v1::UpdateHeader uploaded_header() {
    MutexLock lock(&mu_);
    return uploaded_header_;
  }

 private:
  static std::string Key(const v1::UpdateHeader& h) {
    return absl::StrCat(h.task_id(), "/", h.sha256());
  }

  const BaseModel base_;
  const std::vector<v1::TrainTask> tasks_;
  const Upload upload_;
  Mutex mu_;
  bool tasks_sent_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t applied_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<v1::EdgeMessage> received_ ABSL_GUARDED_BY(mu_);
  int downloads_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<Attempt> attempts_ ABSL_GUARDED_BY(mu_);
  int offset_calls_ ABSL_GUARDED_BY(mu_) = 0;
  std::string partial_key_ ABSL_GUARDED_BY(mu_);  // task/sha of the upload held in part
  std::string partial_ ABSL_GUARDED_BY(mu_);
  v1::UpdateHeader uploaded_header_ ABSL_GUARDED_BY(mu_);
  std::string uploaded_ ABSL_GUARDED_BY(mu_);
};

v1::TrainTask Task(const BaseModel& base, const std::string& task_id, absl::Time deadline) {
  v1::TrainTask task;
  task.set_task_id(task_id);
  task.set_job_id("job-1");
  task.set_round(1);
  task.set_model("m");
  task.set_base_sha256(base.sha256);
  task.set_schema_hash(base.schema_hash);
  task.set_optimizer(v1::SGD);
  task.set_learning_rate(0.05);
  task.set_epochs(1);
  task.set_batch_size(16);
  task.set_deadline_unix_ms(absl::ToUnixMillis(deadline));
  task.set_seed(1);
  return task;
}

// The scripted cloud on 127.0.0.1:0 and one started Agent with a real runtime and outbox in a
// temp dir. The destructor stops the agent, then the server.
class Node {
 public:
  explicit Node(ScriptedFleet* fleet) {
    auto server = net::StartGrpcServer({"127.0.0.1:0", {{fleet, "fedge.v1.Fleet"}}});
    EXPECT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    auto rt = runtime::Runtime::Open({dir_.path() + "/state", {}});
    EXPECT_TRUE(rt.ok()) << rt.status();
    runtime_ = std::move(*rt);
    auto box = outbox::Outbox::Open({dir_.path() + "/outbox.db"});
    EXPECT_TRUE(box.ok()) << box.status();
    outbox_ = std::move(*box);
    holdout_ = data::GenerateSite({}, 0, 32, /*stream=*/1);

    Agent::Options o;
    o.node_id = "edge-1";
    o.cloud_address = absl::StrCat("127.0.0.1:", server_.port);
    o.runtime = runtime_.get();
    o.outbox = outbox_.get();
    o.training_data = TrainingData;
    o.holdout_data = &holdout_;
    o.train_limits.threads = 1;
    o.initial_backoff = absl::Milliseconds(20);
    o.max_backoff = kMaxBackoff;
    o.rpc_timeout = absl::Seconds(5);
    o.seed = 7;
    o.on_update_sent = [this](const v1::UpdateHeader&, const FlatTensor& delta) {
      MutexLock lock(&mu_);
      sent_payload_ = EncodeF32(delta);
    };
    agent_ = std::make_unique<Agent>(std::move(o));
    agent_->Start();
  }

  ~Node() {
    agent_->Stop();
    agent_.reset();
    net::StopGrpcServer(&server_, std::chrono::seconds(1));
  }

  // The encoded update the agent last handed to Upload.
  std::string sent_payload() {
    MutexLock lock(&mu_);
    return sent_payload_;
  }

  static constexpr absl::Duration kMaxBackoff = absl::Milliseconds(200);

 private:
  testing::TempDir dir_;
  net::StartedGrpcServer server_;
  std::unique_ptr<runtime::Runtime> runtime_;
  std::unique_ptr<outbox::Outbox> outbox_;
  data::Dataset holdout_;
  std::unique_ptr<Agent> agent_;
  Mutex mu_;
  std::string sent_payload_ ABSL_GUARDED_BY(mu_);
};

class AgentOfflineTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    torchlib::SetNumThreads(1);
    base_ = new BaseModel(MakeBaseModel());
  }
  static void TearDownTestSuite() {
    delete base_;
    base_ = nullptr;
  }
  static const BaseModel& base() { return *base_; }

 private:
  static BaseModel* base_;
};

BaseModel* AgentOfflineTest::base_ = nullptr;

TEST_F(AgentOfflineTest, ATaskPastItsDeadlineIsAbandonedWithoutADownload) {
  ScriptedFleet fleet(base(), {Task(base(), "late", absl::Now() - absl::Seconds(1))},
                      ScriptedFleet::Upload::kAccept);
  Node node(&fleet);
  ASSERT_TRUE(WaitUntil([&] { return fleet.Outcome("late").has_value(); }));
  const v1::EdgeMessage status = *fleet.Outcome("late");
  ASSERT_EQ(status.task_status().state(), v1::TASK_FAILED) << status.DebugString();
  EXPECT_GT(status.message_id(), 0u) << "a task status travels in the outbox";
  EXPECT_NE(status.task_status().message().find("deadline passed"), std::string::npos)
      << status.task_status().message();
  EXPECT_EQ(fleet.downloads(), 0);
  EXPECT_TRUE(fleet.attempts().empty());
  EXPECT_FALSE(fleet.TaskStatus("late", v1::TASK_UPLOADED).has_value());
}

TEST_F(AgentOfflineTest, AnUploadTheCloudCannotTakeIsRetriedUntilTheDeadlineThenAbandoned) {
  const absl::Time deadline = absl::Now() + absl::Seconds(3);
  ScriptedFleet fleet(base(), {Task(base(), "offline", deadline)}, ScriptedFleet::Upload::kOffline);
  Node node(&fleet);
  ASSERT_TRUE(WaitUntil([&] { return fleet.Outcome("offline").has_value(); }));
  const v1::EdgeMessage status = *fleet.Outcome("offline");
  ASSERT_EQ(status.task_status().state(), v1::TASK_FAILED) << status.DebugString();
  EXPECT_GT(status.message_id(), 0u);
  EXPECT_NE(status.task_status().message().find("deadline"), std::string::npos)
      << status.task_status().message();
  EXPECT_EQ(fleet.downloads(), 1);

  const auto attempts = fleet.attempts();
  EXPECT_GT(attempts.size(), 1u) << "the upload is retried while the cloud is offline";
  // It gives up only when the next try would come after the deadline, so not before the
  // deadline less one (capped) backoff, and it never tries after the deadline.
  EXPECT_GE(status.queued_unix_ms(), absl::ToUnixMillis(deadline - Node::kMaxBackoff));
  for (const auto& a : attempts) {
    // (A try that starts just before the deadline may arrive a little after it.)
    EXPECT_LE(a.at, deadline + absl::Milliseconds(500)) << "an upload attempt after the deadline";
  }
  // Once abandoned, no more attempts.
  absl::SleepFor(absl::Milliseconds(800));
  EXPECT_EQ(fleet.attempts().size(), attempts.size());
  EXPECT_FALSE(fleet.TaskStatus("offline", v1::TASK_UPLOADED).has_value());
}

TEST_F(AgentOfflineTest, AnInterruptedUploadResumesFromTheOffsetTheCloudHolds) {
  ScriptedFleet fleet(base(), {Task(base(), "resume", absl::Now() + absl::Seconds(60))},
                      ScriptedFleet::Upload::kBreakFirst);
  Node node(&fleet);
  ASSERT_TRUE(WaitUntil([&] { return fleet.Outcome("resume").has_value(); }));
  const v1::EdgeMessage status = *fleet.Outcome("resume");
  ASSERT_EQ(status.task_status().state(), v1::TASK_UPLOADED) << status.DebugString();
  EXPECT_GT(status.message_id(), 0u);

  const v1::UpdateHeader header = fleet.uploaded_header();
  const std::string payload = fleet.uploaded();
  ASSERT_GT(header.total_size(), 1);
  ASSERT_LT(header.total_size(), kChunk) << "the test assumes a one-chunk update";
  const int64_t kept = header.total_size() / 2;

  const auto attempts = fleet.attempts();
  ASSERT_EQ(attempts.size(), 2u);
  EXPECT_EQ(attempts[0].first_chunk_offset, 0);
  EXPECT_EQ(attempts[1].first_chunk_offset, kept) << "the retry resends only what is missing";
  EXPECT_GE(fleet.offset_calls(), 1);
  // The reassembled payload is whole: its digest is the header's, and it is what was trained.
  EXPECT_EQ(static_cast<int64_t>(payload.size()), header.total_size());
  EXPECT_EQ(Sha256Hex(payload), header.sha256());
  EXPECT_EQ(payload, node.sent_payload());
  EXPECT_EQ(header.task_id(), "resume");
}

}  // namespace
}  // namespace fedge::edge::agent
