#include "tests/testing/fixtures.h"

#include <sqlite3.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/data/dataset.h"
#include "common/data/synthetic.h"
#include "common/metrics/metrics.h"
#include "common/net/identity.h"
#include "common/status/grpc_status.h"
#include "common/tensor/flat.h"
#include "common/tensor/sha256.h"
#include "gtest/gtest.h"

namespace fedge::testing {

TempDir::TempDir() {
  static std::atomic<int> counter{0};
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  path_ = absl::StrCat(::testing::TempDir(), "/fedge_", info ? info->name() : "test", "_",
                       ::getpid(), "_", counter++);
  std::filesystem::remove_all(path_);
  std::filesystem::create_directories(path_);
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

std::unique_ptr<grpc::ClientContext> Context(const std::string& node_id,
                                             absl::Duration timeout) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  if (!node_id.empty()) net::SetCallerNodeId(ctx.get(), node_id);
  ctx->AddMetadata(net::kPrincipalMetadata, "test");
  return ctx;
}

v1::RegisterModelHeader SyntheticModelHeader(const std::string& name,
                                             const std::string& architecture) {
  v1::RegisterModelHeader header;
  header.set_name(name);
  header.mutable_builtin()->set_architecture(architecture);
  header.mutable_builtin()->set_seed(7);
  data::SyntheticOptions syn;
  if (architecture == "conv1d") syn.window = 16;
  auto* c = header.mutable_contract();
  for (const auto& f : data::SyntheticFeatureNames(syn)) c->add_feature_names(f);
  for (const auto& l : data::SyntheticLabels()) c->add_labels(l);
  c->set_window(syn.window);
  auto stats = data::ComputeStats(data::GenerateHoldout(syn, 1000));
  c->mutable_normalization()->mutable_mean()->Add(stats.mean.begin(), stats.mean.end());
  c->mutable_normalization()->mutable_std()->Add(stats.std.begin(), stats.std.end());
  return header;
}

absl::StatusOr<v1::Version> Register(v1::Admin::Stub* admin, const v1::RegisterModelHeader& h,
                                     const std::string& archive, const std::string& token) {
  auto ctx = Context();
  if (!token.empty()) ctx->AddMetadata("authorization", "Bearer " + token);
  v1::Version version;
  auto writer = admin->RegisterModel(ctx.get(), &version);
  v1::RegisterModelRequest req;
  *req.mutable_header() = h;
  if (!archive.empty()) {
    req.mutable_header()->set_archive_size(static_cast<int64_t>(archive.size()));
    req.mutable_header()->set_archive_sha256(Sha256Hex(archive));
  }
  writer->Write(req);
  for (size_t off = 0; off < archive.size(); off += 1 << 20) {
    v1::RegisterModelRequest chunk;
    chunk.mutable_chunk()->set_offset(static_cast<int64_t>(off));
    chunk.mutable_chunk()->set_data(archive.substr(off, 1 << 20));
    writer->Write(chunk);
  }
  writer->WritesDone();
  grpc::Status st = writer->Finish();
  if (!st.ok()) return FromGrpcStatus(st);
  return version;
}

absl::StatusOr<v1::Job> WaitForJob(v1::Admin::Stub* admin, const std::string& id,
                                   absl::Duration timeout) {
  const absl::Time until = absl::Now() + timeout;
  while (true) {
    auto ctx = Context();
    v1::GetJobRequest req;
    req.set_id(id);
    v1::Job job;
    grpc::Status st = admin->GetJob(ctx.get(), req, &job);
    if (!st.ok()) return FromGrpcStatus(st);
    if (job.state() == v1::JOB_SUCCEEDED || job.state() == v1::JOB_FAILED) return job;
    if (absl::Now() > until) {
      return absl::DeadlineExceededError(
          absl::StrCat("job ", id, " still running after ", absl::FormatDuration(timeout)));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

absl::StatusOr<std::string> DownloadVersion(v1::Admin::Stub* admin, const std::string& model,
                                            int64_t version) {
  auto ctx = Context();
  v1::GetVersionRequest req;
  req.set_model(model);
  req.set_version(version);
  auto reader = admin->DownloadVersion(ctx.get(), req);
  std::string bytes;
  v1::Chunk chunk;
  while (reader->Read(&chunk)) bytes.append(chunk.data());
  grpc::Status st = reader->Finish();
  if (!st.ok()) return FromGrpcStatus(st);
  return bytes;
}

std::vector<std::vector<std::string>> QueryFile(const std::string& path, const std::string& sql) {
  std::vector<std::vector<std::string>> rows;
  sqlite3* db = nullptr;
  EXPECT_EQ(sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr), SQLITE_OK) << path;
  sqlite3_stmt* stmt = nullptr;
  EXPECT_EQ(sqlite3_prepare_v2(db, sql.c_str(), -1, &stmt, nullptr), SQLITE_OK)
      << sqlite3_errmsg(db);
  while (stmt != nullptr && sqlite3_step(stmt) == SQLITE_ROW) {
    std::vector<std::string> row;
    for (int c = 0; c < sqlite3_column_count(stmt); ++c) {
      const unsigned char* text = sqlite3_column_text(stmt, c);
      row.emplace_back(text == nullptr ? "" : reinterpret_cast<const char*>(text));
    }
    rows.push_back(std::move(row));
  }
  sqlite3_finalize(stmt);
  sqlite3_close(db);
  return rows;
}

std::vector<v1::Event> ListEvents(v1::Admin::Stub* admin, const std::vector<std::string>& types) {
  v1::WatchEventsRequest req;
  for (const auto& t : types) req.add_types(t);
  req.set_limit(1000);
  v1::ListEventsResponse resp;
  auto ctx = Context();
  grpc::Status st = admin->ListEvents(ctx.get(), req, &resp);
  EXPECT_TRUE(st.ok()) << st.error_message();
  return {resp.events().begin(), resp.events().end()};
}

std::vector<v1::Job> ListJobs(v1::Admin::Stub* admin) {
  v1::ListJobsResponse resp;
  auto ctx = Context();
  grpc::Status st = admin->ListJobs(ctx.get(), {}, &resp);
  EXPECT_TRUE(st.ok()) << st.error_message();
  return {resp.jobs().begin(), resp.jobs().end()};
}

grpc::Status SendUpdate(v1::Fleet::Stub* stub, const std::string& node_id,
                        const v1::TrainTask& task, const std::vector<float>& delta,
                        int64_t num_samples, const std::map<std::string, double>& metrics) {
  return SendPayload(stub, node_id, task, EncodeF32(delta), v1::F32, num_samples, metrics);
}

v1::UpdateHeader HeaderFor(const v1::TrainTask& task, const std::string& payload,
                           v1::Encoding encoding, int64_t num_samples) {
  v1::UpdateHeader h;
  h.set_task_id(task.task_id());
  h.set_job_id(task.job_id());
  h.set_round(task.round());
  h.set_schema_hash(task.schema_hash());
  h.set_encoding(encoding);
  h.set_num_samples(num_samples);
  h.set_total_size(static_cast<int64_t>(payload.size()));
  h.set_sha256(Sha256Hex(payload));
  return h;
}

grpc::Status SendPayload(v1::Fleet::Stub* stub, const std::string& node_id,
                         const v1::TrainTask& task, const std::string& payload,
                         v1::Encoding encoding, int64_t num_samples,
                         const std::map<std::string, double>& metrics) {
  auto ctx = Context(node_id);
  v1::UploadResponse resp;
  auto writer = stub->UploadUpdate(ctx.get(), &resp);
  v1::UploadRequest req;
  v1::UpdateHeader* h = req.mutable_header();
  *h = HeaderFor(task, payload, encoding, num_samples);
  for (const auto& [name, value] : metrics) (*h->mutable_metrics())[name] = value;
  writer->Write(req);
  for (size_t off = 0; off < payload.size(); off += 1 << 20) {
    v1::UploadRequest chunk;
    chunk.mutable_chunk()->set_offset(static_cast<int64_t>(off));
    chunk.mutable_chunk()->set_data(payload.substr(off, 1 << 20));
    if (!writer->Write(chunk)) break;
  }
  writer->WritesDone();
  return writer->Finish();
}

FakeEdge::FakeEdge(std::shared_ptr<grpc::Channel> channel, const std::string& node_id,
                   const std::map<std::string, v1::VersionRef>& active,
                   const std::string& outbox_epoch, const v1::Hello& extra)
    : node_id_(node_id), stub_(v1::Fleet::NewStub(channel)) {
  net::SetCallerNodeId(&context_, node_id);
  stream_ = stub_->Session(&context_);
  v1::EdgeMessage hello;
  hello.mutable_hello()->set_node_id(node_id);
  hello.mutable_hello()->add_capabilities("train");
  hello.mutable_hello()->add_capabilities("predict");
  hello.mutable_hello()->set_protocol_version(1);
  hello.mutable_hello()->set_outbox_epoch(outbox_epoch);
  hello.mutable_hello()->MergeFrom(extra);
  for (const auto& [model, ref] : active) {
    (*hello.mutable_hello()->mutable_active_versions())[model] = ref;
  }
  stream_->Write(hello);
}

bool FakeEdge::Send(const v1::EdgeMessage& message) {
  std::lock_guard<std::mutex> lock(write_mu_);
  return stream_->Write(message);
}

FakeEdge::~FakeEdge() { Close(); }

bool FakeEdge::Next(v1::CloudMessage* message) {
  if (ended_) return false;
  ended_ = !stream_->Read(message);
  return !ended_;
}

absl::StatusOr<v1::TrainTask> FakeEdge::NextTask() {
  v1::CloudMessage msg;
  while (Next(&msg)) {
    if (msg.has_train_task()) return msg.train_task();
  }
  return absl::UnavailableError("session ended before a task arrived");
}

grpc::Status FakeEdge::Close() {
  if (closed_) return final_status_;
  closed_ = true;
  if (!ended_) {
    stream_->WritesDone();
    context_.TryCancel();
    v1::CloudMessage drain;
    while (stream_->Read(&drain)) {
    }
  }
  final_status_ = stream_->Finish();
  return final_status_;
}

double MetricValue(const std::string& series) {
  const std::string text = metrics::RenderText();
  const size_t at = text.find(series + " ");
  return at == std::string::npos ? -1 : std::stod(text.substr(at + series.size() + 1));
}

}  // namespace fedge::testing
