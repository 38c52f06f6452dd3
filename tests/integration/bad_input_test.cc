// Bad input at the coordinator's gRPC surface gets the right status code, never crashes it, and
// never damages the round or the registry: after every refusal a good update still completes
// the round, and the registered version is exactly base + delta.

#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "cloud/server/cloud_server.h"
#include "common/net/servers.h"
#include "common/tensor/flat.h"
#include "common/tensor/sha256.h"
#include "common/torch/model.h"
#include "fedge/v1/admin.grpc.pb.h"
#include "gtest/gtest.h"
#include "tests/testing/fixtures.h"
#include "tests/testing/test_cloud.h"

namespace fedge {
namespace {

class BadInputTest : public testing::CloudWithModelTest {
 protected:
  void TearDown() override {
    if (edge_) edge_->Close();
    CloudWithModelTest::TearDown();
  }

  // Connects a fake edge, starts a one-node job and returns the task it receives.
  v1::TrainTask StartRound(int rounds = 1, const v1::AggregationSpec& aggregation = {}) {
    edge_ = std::make_unique<testing::FakeEdge>(channel_, "fake-1");
    v1::StartJobRequest req;
    *req.mutable_spec()->mutable_aggregation() = aggregation;
    req.mutable_spec()->set_model("m");
    req.mutable_spec()->set_rounds(rounds);
    req.mutable_spec()->set_clients_per_round(1);
    req.mutable_spec()->set_round_timeout_ms(60000);
    req.mutable_spec()->set_wait_for_clients_ms(10000);
    auto ctx = testing::Context();
    grpc::Status st = admin_->StartJob(ctx.get(), req, &job_);
    EXPECT_TRUE(st.ok()) << st.error_message();
    auto task = edge_->NextTask();
    EXPECT_TRUE(task.ok()) << task.status();
    return task.ok() ? *task : v1::TrainTask();
  }

  int64_t NumElements() const { return num_elements_; }

  v1::UpdateHeader HeaderFor(const v1::TrainTask& task, const std::string& payload) {
    return testing::HeaderFor(task, payload, v1::F32, 100);
  }

  // Sends a header and the payload in chunks of `chunk` bytes as `node`.
  // Only the chunks in [from, to) are sent (to = 0: to the end).
  grpc::Status Upload(const v1::UpdateHeader& header, const std::string& payload,
                      const std::string& node = "fake-1", size_t chunk = 1000, bool reorder = false,
                      size_t from = 0, size_t to = 0) {
    auto stub = v1::Fleet::NewStub(channel_);
    auto ctx = testing::Context(node);
    v1::UploadResponse resp;
    auto writer = stub->UploadUpdate(ctx.get(), &resp);
    v1::UploadRequest req;
    *req.mutable_header() = header;
    writer->Write(req);
    std::vector<size_t> offsets;
    for (size_t off = from; off < (to == 0 ? payload.size() : to); off += chunk) {
      offsets.push_back(off);
    }
    if (reorder && offsets.size() > 2) std::swap(offsets[1], offsets[2]);
    for (size_t off : offsets) {
      v1::UploadRequest c;
      c.mutable_chunk()->set_offset(static_cast<int64_t>(off));
      c.mutable_chunk()->set_data(payload.substr(off, chunk));
      if (!writer->Write(c)) break;
    }
    writer->WritesDone();
    return writer->Finish();
  }

  std::string Payload(float value) {
    return EncodeF32(FlatTensor(static_cast<size_t>(NumElements()), value));
  }

  std::unique_ptr<testing::FakeEdge> edge_;
  v1::Job job_;
};

TEST_F(BadInputTest, EveryBadUpdateIsRefusedAndTheRoundStillCompletesCleanly) {
  const v1::TrainTask task = StartRound();
  const std::string good = Payload(0.01f);

  // Wrong schema.
  v1::UpdateHeader h = HeaderFor(task, good);
  h.set_schema_hash(std::string(64, 'a'));
  EXPECT_EQ(Upload(h, good).error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  // Wrong shape: one value short.
  const std::string short_payload = good.substr(0, good.size() - 4);
  EXPECT_EQ(Upload(HeaderFor(task, short_payload), short_payload).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);

  // NaN and Inf.
  for (float bad :
       {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
    FlatTensor v(static_cast<size_t>(NumElements()), 0.01f);
    v[v.size() / 2] = bad;
    const std::string p = EncodeF32(v);
    grpc::Status st = Upload(HeaderFor(task, p), p);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << st.error_message();
    EXPECT_NE(st.error_message().find("non-finite"), std::string::npos) << st.error_message();
  }

  // A norm far beyond the bound.
  const std::string huge = Payload(1e5f);
  EXPECT_EQ(Upload(HeaderFor(task, huge), huge).error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  // Stale and future rounds.
  h = HeaderFor(task, good);
  h.set_round(task.round() + 1);
  EXPECT_EQ(Upload(h, good).error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  h.set_round(0);
  EXPECT_EQ(Upload(h, good).error_code(), grpc::StatusCode::FAILED_PRECONDITION);

  // An unknown job; a task that is not this node's; no identity at all.
  h = HeaderFor(task, good);
  h.set_job_id("job-nope");
  EXPECT_EQ(Upload(h, good).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(Upload(HeaderFor(task, good), good, "intruder").error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  {
    auto stub = v1::Fleet::NewStub(channel_);
    auto ctx = testing::Context();  // no node id
    v1::UploadResponse resp;
    auto writer = stub->UploadUpdate(ctx.get(), &resp);
    writer->WritesDone();
    EXPECT_EQ(writer->Finish().error_code(), grpc::StatusCode::UNAUTHENTICATED);
  }

  // Truncated: the stream ends early.
  {
    v1::UpdateHeader th = HeaderFor(task, good);
    grpc::Status st = Upload(th, good.substr(0, good.size() / 2));
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_NE(st.error_message().find("truncated"), std::string::npos) << st.error_message();
  }
  // Corrupted: a byte flipped after the digest was taken.
  {
    std::string corrupt = good;
    corrupt[corrupt.size() / 3] ^= 0x40;
    EXPECT_EQ(Upload(HeaderFor(task, good), corrupt).error_code(), grpc::StatusCode::DATA_LOSS);
  }
  // Out of order chunks.
  EXPECT_EQ(Upload(HeaderFor(task, good), good, "fake-1", 1000, /*reorder=*/true).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  // An unsupported encoding.
  h = HeaderFor(task, good);
  h.set_encoding(v1::ENCODING_UNSPECIFIED);
  EXPECT_EQ(Upload(h, good).error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  // The good update is accepted once, and only once.
  grpc::Status ok = Upload(HeaderFor(task, good), good);
  ASSERT_TRUE(ok.ok()) << ok.error_message();
  auto job = testing::WaitForJob(admin_.get(), job_.id(), absl::Seconds(30));
  ASSERT_TRUE(job.ok()) << job.status();
  ASSERT_EQ(job->state(), v1::JOB_SUCCEEDED) << job->error();
  EXPECT_EQ(Upload(HeaderFor(task, good), good).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);  // the job is over

  // Nothing bad was folded: the new version is exactly base + 0.01 everywhere.
  auto base_archive = testing::DownloadVersion(admin_.get(), "m", 1);
  auto new_archive = testing::DownloadVersion(admin_.get(), "m", 2);
  ASSERT_TRUE(base_archive.ok() && new_archive.ok());
  auto base_model = torchlib::Model::Load(*base_archive);
  auto new_model = torchlib::Model::Load(*new_archive);
  ASSERT_TRUE(base_model.ok() && new_model.ok());
  FlatTensor b = (*base_model)->Flat(), n = (*new_model)->Flat();
  ASSERT_EQ(b.size(), n.size());
  for (size_t i = 0; i < b.size(); ++i) ASSERT_FLOAT_EQ(n[i], b[i] + 0.01f) << i;
}

TEST_F(BadInputTest, AJobThatClipsScalesAnUpdateAboveItsBoundDownToIt) {
  v1::AggregationSpec aggregation;
  aggregation.set_max_update_norm(2.0);
  aggregation.set_over_norm("clip");
  const v1::TrainTask task = StartRound(1, aggregation);
  const std::string clipped =
      R"(fedge_cloud_poisoned_updates_total{action="clipped",reason="norm"})";
  const std::string refused =
      R"(fedge_cloud_poisoned_updates_total{action="refused",reason="non_finite"})";
  const double clipped_before = testing::MetricValue(clipped);
  const double refused_before = testing::MetricValue(refused);

  // NaN cannot be clipped: still refused.
  FlatTensor bad(static_cast<size_t>(NumElements()), 0.5f);
  bad[3] = std::numeric_limits<float>::quiet_NaN();
  const std::string nan_payload = EncodeF32(bad);
  EXPECT_EQ(Upload(HeaderFor(task, nan_payload), nan_payload).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);

  // Every value 0.5: the norm is 0.5·sqrt(N), far above 2, so the update is scaled by
  // 2 / (0.5·sqrt(N)) and the model moves by 2/sqrt(N) in every coordinate.
  const std::string big = Payload(0.5f);
  grpc::Status st = Upload(HeaderFor(task, big), big);
  ASSERT_TRUE(st.ok()) << st.error_message();
  auto job = testing::WaitForJob(admin_.get(), job_.id(), absl::Seconds(30));
  ASSERT_TRUE(job.ok()) << job.status();
  ASSERT_EQ(job->state(), v1::JOB_SUCCEEDED) << job->error();
  EXPECT_EQ(testing::MetricValue(clipped), clipped_before + 1);
  EXPECT_EQ(testing::MetricValue(refused), refused_before + 1);

  auto base_archive = testing::DownloadVersion(admin_.get(), "m", 1);
  auto new_archive = testing::DownloadVersion(admin_.get(), "m", 2);
  ASSERT_TRUE(base_archive.ok() && new_archive.ok());
  FlatTensor b = (*torchlib::Model::Load(*base_archive))->Flat();
  FlatTensor n = (*torchlib::Model::Load(*new_archive))->Flat();
  const double step = 2.0 / std::sqrt(static_cast<double>(NumElements()));
  double moved = 0;
  for (size_t i = 0; i < b.size(); ++i) {
    ASSERT_NEAR(n[i] - b[i], step, 1e-6) << i;
    moved += (static_cast<double>(n[i]) - b[i]) * (static_cast<double>(n[i]) - b[i]);
  }
  EXPECT_NEAR(std::sqrt(moved), 2.0, 1e-3);  // exactly the bound
}

TEST_F(BadInputTest, AJobsOwnBoundRefusesAndBadBoundsAreInvalidArgument) {
  v1::AggregationSpec aggregation;
  aggregation.set_max_update_norm(2.0);
  const v1::TrainTask task = StartRound(1, aggregation);
  const std::string big = Payload(0.5f);
  grpc::Status st = Upload(HeaderFor(task, big), big);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(st.error_message().find("exceeds the bound 2"), std::string::npos)
      << st.error_message();

  for (auto [norm, action] : {std::pair<double, const char*>{-1, "clip"}, {1, "trim"}}) {
    v1::StartJobRequest req;
    req.mutable_spec()->set_model("m");
    req.mutable_spec()->mutable_aggregation()->set_max_update_norm(norm);
    req.mutable_spec()->mutable_aggregation()->set_over_norm(action);
    v1::Job job;
    auto ctx = testing::Context();
    grpc::Status bad = admin_->StartJob(ctx.get(), req, &job);
    EXPECT_EQ(bad.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_NE(bad.error_message().find(norm < 0 ? "max_update_norm" : "over_norm"),
              std::string::npos)
        << bad.error_message();
  }
}

int64_t HeldBytes(v1::Fleet::Stub* stub, const v1::UpdateHeader& header,
                  const std::string& node = "fake-1") {
  auto ctx = testing::Context(node);
  v1::UploadOffsetRequest req;
  req.set_task_id(header.task_id());
  req.set_sha256(header.sha256());
  v1::UploadOffsetResponse resp;
  grpc::Status st = stub->UploadOffset(ctx.get(), req, &resp);
  EXPECT_TRUE(st.ok()) << st.error_message();
  return resp.received_bytes();
}

// An upload that breaks off continues from what the cloud holds; a resume at the wrong offset
// is refused, and the result is exactly the update that was meant.
TEST_F(BadInputTest, AnInterruptedUploadResumesFromWhatTheCloudHolds) {
  const v1::TrainTask task = StartRound();
  auto stub = v1::Fleet::NewStub(channel_);
  std::string payload = Payload(0.02f);
  const v1::UpdateHeader h = HeaderFor(task, payload);
  ASSERT_GT(payload.size(), 3000u);
  EXPECT_EQ(HeldBytes(stub.get(), h), 0);
  // The first attempt stops after 3 chunks of 1000 bytes.
  grpc::Status cut = Upload(h, payload, "fake-1", 1000, false, 0, 3000);
  EXPECT_EQ(cut.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << cut.error_message();
  EXPECT_EQ(HeldBytes(stub.get(), h), 3000);
  EXPECT_EQ(HeldBytes(stub.get(), h, "fake-2"), 0) << "parts belong to their node";
  // Resuming anywhere but at the held offset is refused, naming both.
  grpc::Status wrong = Upload(h, payload, "fake-1", 1000, false, 2000);
  EXPECT_EQ(wrong.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(wrong.error_message().find("holds 3000"), std::string::npos) << wrong.error_message();
  EXPECT_EQ(HeldBytes(stub.get(), h), 3000);
  // The rest completes the update.
  grpc::Status rest = Upload(h, payload, "fake-1", 1000, false, 3000);
  ASSERT_TRUE(rest.ok()) << rest.error_message();
  EXPECT_EQ(HeldBytes(stub.get(), h), 0) << "the part is gone once the update is in";
  auto job = testing::WaitForJob(admin_.get(), job_.id(), absl::Seconds(30));
  ASSERT_TRUE(job.ok()) << job.status();
  ASSERT_EQ(job->state(), v1::JOB_SUCCEEDED) << job->error();
  auto base_model = torchlib::Model::Load(*testing::DownloadVersion(admin_.get(), "m", 1));
  auto new_model = torchlib::Model::Load(*testing::DownloadVersion(admin_.get(), "m", 2));
  ASSERT_TRUE(base_model.ok() && new_model.ok());
  FlatTensor b = (*base_model)->Flat(), n = (*new_model)->Flat();
  ASSERT_EQ(b.size(), n.size());
  for (size_t i = 0; i < b.size(); ++i) ASSERT_FLOAT_EQ(n[i], b[i] + 0.02f) << i;
}

TEST_F(BadInputTest, AResumeOverACorruptedPartStartsOver) {
  const v1::TrainTask task = StartRound();
  auto stub = v1::Fleet::NewStub(channel_);
  const std::string payload = Payload(0.03f);
  const v1::UpdateHeader h = HeaderFor(task, payload);
  // The held part does not match the payload the header names (e.g. a torn write).
  std::string other = payload;
  other[10] ^= 0x40;
  Upload(h, other, "fake-1", 1000, false, 0, 2000);
  ASSERT_EQ(HeldBytes(stub.get(), h), 2000);
  grpc::Status bad = Upload(h, payload, "fake-1", 1000, false, 2000);
  EXPECT_EQ(bad.error_code(), grpc::StatusCode::DATA_LOSS) << bad.error_message();
  EXPECT_EQ(HeldBytes(stub.get(), h), 0) << "the bad part is dropped";
  grpc::Status whole = Upload(h, payload);
  EXPECT_TRUE(whole.ok()) << whole.error_message();
}

TEST_F(BadInputTest, DuplicateUpdateIsAlreadyExists) {
  // A second, silent node keeps the round open after the first node's update.
  testing::FakeEdge silent(channel_, "fake-2");
  v1::CloudMessage ack;
  ASSERT_TRUE(silent.Next(&ack));
  edge_ = std::make_unique<testing::FakeEdge>(channel_, "fake-1");
  ASSERT_TRUE(edge_->Next(&ack));
  v1::StartJobRequest req;
  req.mutable_spec()->set_model("m");
  req.mutable_spec()->set_rounds(1);
  req.mutable_spec()->set_clients_per_round(2);
  req.mutable_spec()->set_min_clients(2);
  req.mutable_spec()->set_round_timeout_ms(60000);
  auto ctx = testing::Context();
  ASSERT_TRUE(admin_->StartJob(ctx.get(), req, &job_).ok());
  auto task = edge_->NextTask();
  ASSERT_TRUE(task.ok()) << task.status();
  const std::string good = Payload(0.0f);
  ASSERT_TRUE(Upload(HeaderFor(*task, good), good).ok());
  grpc::Status again = Upload(HeaderFor(*task, good), good);
  EXPECT_EQ(again.error_code(), grpc::StatusCode::ALREADY_EXISTS) << again.error_message();
  silent.Close();
}

TEST_F(BadInputTest, SessionMustStartWithHelloFromTheCallingNode) {
  auto stub = v1::Fleet::NewStub(channel_);
  {
    auto ctx = testing::Context("node-a");
    auto stream = stub->Session(ctx.get());
    v1::EdgeMessage msg;
    msg.mutable_heartbeat()->set_sent_unix_ms(1);
    stream->Write(msg);
    stream->WritesDone();
    v1::CloudMessage in;
    while (stream->Read(&in)) {
    }
    EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  }
  {
    auto ctx = testing::Context("node-a");
    auto stream = stub->Session(ctx.get());
    v1::EdgeMessage msg;
    msg.mutable_hello()->set_node_id("node-b");
    stream->Write(msg);
    stream->WritesDone();
    v1::CloudMessage in;
    while (stream->Read(&in)) {
    }
    EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::PERMISSION_DENIED);
  }
  {
    auto ctx = testing::Context("bad id with spaces");
    auto stream = stub->Session(ctx.get());
    v1::CloudMessage in;
    while (stream->Read(&in)) {
    }
    EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }
}

TEST_F(BadInputTest, UnknownVersionsModelsAndDigestsAreNotFound) {
  v1::GetVersionRequest req;
  req.set_model("m");
  req.set_version(99);
  v1::Version v;
  auto ctx = testing::Context();
  grpc::Status st = admin_->GetVersion(ctx.get(), req, &v);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_NE(st.error_message().find("99"), std::string::npos) << st.error_message();

  EXPECT_EQ(testing::DownloadVersion(admin_.get(), "nope", 0).status().code(),
            absl::StatusCode::kNotFound);

  v1::StartJobRequest job;
  job.mutable_spec()->set_model("nope");
  v1::Job out;
  auto jctx = testing::Context();
  EXPECT_EQ(admin_->StartJob(jctx.get(), job, &out).error_code(), grpc::StatusCode::NOT_FOUND);
  job.mutable_spec()->set_model("m");
  job.mutable_spec()->set_base_version(7);
  auto jctx2 = testing::Context();
  EXPECT_EQ(admin_->StartJob(jctx2.get(), job, &out).error_code(), grpc::StatusCode::NOT_FOUND);

  // A node downloads only what it was sent: an unknown digest, like any artifact not meant
  // for it, is PERMISSION_DENIED; a malformed one is INVALID_ARGUMENT.
  auto stub = v1::Fleet::NewStub(channel_);
  for (const std::string& sha : {std::string(64, 'b'), std::string("not-a-digest")}) {
    auto dctx = testing::Context("fake-1");
    v1::DownloadRequest dreq;
    dreq.set_sha256(sha);
    auto reader = stub->DownloadModel(dctx.get(), dreq);
    v1::Chunk chunk;
    while (reader->Read(&chunk)) {
    }
    EXPECT_EQ(reader->Finish().error_code(), sha.size() == 64 ? grpc::StatusCode::PERMISSION_DENIED
                                                              : grpc::StatusCode::INVALID_ARGUMENT);
  }
}

TEST_F(BadInputTest, BadJobSpecsAreInvalidArgument) {
  auto start = [&](auto mutate) {
    v1::StartJobRequest req;
    req.mutable_spec()->set_model("m");
    mutate(req.mutable_spec());
    v1::Job out;
    auto ctx = testing::Context();
    return admin_->StartJob(ctx.get(), req, &out).error_code();
  };
  EXPECT_EQ(start([](v1::JobSpec* s) { s->set_rounds(-1); }), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(start([](v1::JobSpec* s) { s->set_learning_rate(-0.1); }),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(start([](v1::JobSpec* s) { s->set_optimizer("rmsprop"); }),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(start([](v1::JobSpec* s) {
              s->set_clients_per_round(2);
              s->set_min_clients(3);
            }),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(start([](v1::JobSpec* s) { s->mutable_holdout()->set_csv_path("/nonexistent.csv"); }),
            grpc::StatusCode::NOT_FOUND);
}

TEST_F(BadInputTest, BadModelsAreRefusedAtRegistration) {
  // Garbage instead of a TorchScript archive.
  v1::RegisterModelHeader h = testing::SyntheticModelHeader("user");
  h.clear_builtin();
  auto garbage = testing::Register(admin_.get(), h, std::string(5000, 'x'));
  EXPECT_EQ(garbage.status().code(), absl::StatusCode::kInvalidArgument) << garbage.status();
  // A contract whose label count does not match the module's output width.
  auto base_archive = testing::DownloadVersion(admin_.get(), "m", 1);
  ASSERT_TRUE(base_archive.ok());
  h.mutable_contract()->add_labels("extra");
  auto mismatch = testing::Register(admin_.get(), h, *base_archive);
  EXPECT_EQ(mismatch.status().code(), absl::StatusCode::kInvalidArgument) << mismatch.status();
  // An unknown architecture and a bad name.
  v1::RegisterModelHeader b = testing::SyntheticModelHeader("x", "transformer");
  EXPECT_EQ(testing::Register(admin_.get(), b).status().code(), absl::StatusCode::kInvalidArgument);
  b = testing::SyntheticModelHeader("../etc");
  EXPECT_EQ(testing::Register(admin_.get(), b).status().code(), absl::StatusCode::kInvalidArgument);
  // The registry still holds exactly the one good version.
  v1::ListVersionsRequest lreq;
  lreq.set_model("m");
  v1::ListVersionsResponse lresp;
  auto ctx = testing::Context();
  ASSERT_TRUE(admin_->ListVersions(ctx.get(), lreq, &lresp).ok());
  EXPECT_EQ(lresp.versions_size(), 1);
}

}  // namespace
}  // namespace fedge

namespace fedge {
namespace {

std::vector<v1::Chunk> Download(v1::Fleet::Stub* stub, const std::string& sha, int64_t offset,
                                grpc::Status* status) {
  auto ctx = testing::Context("fake-1");
  v1::DownloadRequest req;
  req.set_sha256(sha);
  req.set_offset(offset);
  auto reader = stub->DownloadModel(ctx.get(), req);
  std::vector<v1::Chunk> chunks;
  v1::Chunk chunk;
  while (reader->Read(&chunk)) chunks.push_back(chunk);
  *status = reader->Finish();
  return chunks;
}

TEST_F(BadInputTest, DownloadsResumeFromAnOffsetAndCarryTheirDigest) {
  StartRound();  // the node may download the round's base
  auto stub = v1::Fleet::NewStub(channel_);
  grpc::Status st;
  std::vector<v1::Chunk> whole = Download(stub.get(), base_.sha256(), 0, &st);
  ASSERT_TRUE(st.ok()) << st.error_message();
  ASSERT_FALSE(whole.empty());
  EXPECT_EQ(whole[0].sha256(), base_.sha256());
  EXPECT_EQ(whole[0].total_size(), base_.size_bytes());
  std::string bytes;
  for (const auto& c : whole) {
    EXPECT_EQ(c.offset(), static_cast<int64_t>(bytes.size()));
    EXPECT_LE(c.data().size(), size_t{1} << 20);
    bytes += c.data();
  }
  EXPECT_EQ(Sha256Hex(bytes), base_.sha256());

  // Resume after 1000 bytes: the rest, and nothing else.
  std::vector<v1::Chunk> tail = Download(stub.get(), base_.sha256(), 1000, &st);
  ASSERT_TRUE(st.ok());
  ASSERT_FALSE(tail.empty());
  EXPECT_EQ(tail[0].offset(), 1000);
  std::string rest;
  for (const auto& c : tail) rest += c.data();
  EXPECT_EQ(bytes.substr(0, 1000) + rest, bytes);

  Download(stub.get(), base_.sha256(), base_.size_bytes() + 1, &st);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::OUT_OF_RANGE);
  Download(stub.get(), base_.sha256(), -5, &st);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::OUT_OF_RANGE);
}

TEST_F(BadInputTest, ANodeDownloadsOnlyTheModelsOfItsOwnTasks) {
  auto stub = v1::Fleet::NewStub(channel_);
  grpc::Status st;
  // Before any task, not even the registered base.
  Download(stub.get(), base_.sha256(), 0, &st);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::PERMISSION_DENIED) << st.error_message();
  const v1::TrainTask task = StartRound();
  ASSERT_EQ(task.base_sha256(), base_.sha256());
  Download(stub.get(), base_.sha256(), 0, &st);
  EXPECT_TRUE(st.ok()) << st.error_message();
  // Another node that was sent nothing is still refused.
  auto ctx = testing::Context("intruder");
  v1::DownloadRequest req;
  req.set_sha256(base_.sha256());
  auto reader = stub->DownloadModel(ctx.get(), req);
  v1::Chunk chunk;
  while (reader->Read(&chunk)) {
  }
  st = reader->Finish();
  EXPECT_EQ(st.error_code(), grpc::StatusCode::PERMISSION_DENIED) << st.error_message();
  EXPECT_NE(st.error_message().find("intruder"), std::string::npos) << st.error_message();
}

TEST_F(BadInputTest, TheJobsMomentumReachesTheEdgesTasksAndIsBounded) {
  // Unset, it is recorded as the edges' default.
  const v1::TrainTask task = StartRound();
  EXPECT_TRUE(task.has_momentum());
  EXPECT_DOUBLE_EQ(task.momentum(), 0.9);
  EXPECT_DOUBLE_EQ(job_.spec().momentum(), 0.9);
  // Out of [0, 1): refused, naming the flag.
  for (double bad : {1.0, -0.1, std::numeric_limits<double>::quiet_NaN()}) {
    v1::StartJobRequest req;
    req.mutable_spec()->set_model("m");
    req.mutable_spec()->set_momentum(bad);
    v1::Job job;
    auto ctx = testing::Context();
    grpc::Status st = admin_->StartJob(ctx.get(), req, &job);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << bad;
    EXPECT_NE(st.error_message().find("--momentum"), std::string::npos) << st.error_message();
  }
  // Plain SGD reaches the edge as 0, not as "unset".
  v1::StartJobRequest req;
  req.mutable_spec()->set_model("m");
  req.mutable_spec()->set_momentum(0);
  req.mutable_spec()->set_rounds(1);
  req.mutable_spec()->set_round_timeout_ms(60000);
  v1::Job job;
  auto ctx = testing::Context();
  ASSERT_TRUE(admin_->StartJob(ctx.get(), req, &job).ok());
  EXPECT_TRUE(job.spec().has_momentum());
  EXPECT_DOUBLE_EQ(job.spec().momentum(), 0);
  auto second = edge_->NextTask();
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->job_id(), job.id());
  EXPECT_TRUE(second->has_momentum());
  EXPECT_DOUBLE_EQ(second->momentum(), 0);
}

}  // namespace
}  // namespace fedge
