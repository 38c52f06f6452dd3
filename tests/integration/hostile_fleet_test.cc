// A fleet with hostile members: one node's claims, floods and idle streams cannot bend the
// model, fill the disk, grow the stores or starve the other nodes, over real gRPC.

#include <dirent.h>

#include <chrono>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cloud/registry/registry.h"
#include "common/tensor/flat.h"
#include "common/tensor/sha256.h"
#include "fedge/v1/admin.grpc.pb.h"
#include "fedge/v1/fleet.grpc.pb.h"
#include "grpcpp/create_channel.h"
#include "gtest/gtest.h"
#include "tests/testing/fixtures.h"
#include "tests/testing/test_cloud.h"
#include "tests/testing/test_edges.h"

namespace fedge {
namespace {

int CountParts(const std::string& dir) {
  int n = 0;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return 0;
  while (dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name.size() > 5 && name.substr(name.size() - 5) == ".part") ++n;
  }
  ::closedir(d);
  return n;
}

class HostileFleetTest : public testing::CloudWithModelTest {
 protected:
  v1::Hello HelloWithSamples(int64_t samples) {
    v1::Hello hello;
    hello.set_local_samples(samples);
    return hello;
  }

  testing::FakeEdge* AddEdge(const std::string& id, int64_t samples,
                             const std::string& epoch = "") {
    edges_.push_back(std::make_unique<testing::FakeEdge>(
        channel_, id, std::map<std::string, v1::VersionRef>{}, epoch, HelloWithSamples(samples)));
    return edges_.back().get();
  }

  // Sends the header and the first `bytes` of the payload, then ends the stream.
  grpc::Status UploadPrefix(const v1::UpdateHeader& header, const std::string& payload,
                            size_t bytes, const std::string& node) {
    auto stub = v1::Fleet::NewStub(channel_);
    auto ctx = testing::Context(node);
    v1::UploadResponse resp;
    auto writer = stub->UploadUpdate(ctx.get(), &resp);
    v1::UploadRequest req;
    *req.mutable_header() = header;
    writer->Write(req);
    if (bytes > 0) {
      v1::UploadRequest c;
      c.mutable_chunk()->set_offset(0);
      c.mutable_chunk()->set_data(payload.substr(0, bytes));
      writer->Write(c);
    }
    writer->WritesDone();
    return writer->Finish();
  }

  std::string Payload(float value) {
    return EncodeF32(FlatTensor(static_cast<size_t>(num_elements_), value));
  }

  v1::JobSpec OneRound(int clients) {
    v1::JobSpec spec;
    spec.set_rounds(1);
    spec.set_clients_per_round(clients);
    spec.set_min_clients(clients);
    spec.set_round_timeout_ms(60000);
    spec.set_wait_for_clients_ms(10000);
    return spec;
  }
};

TEST_F(HostileFleetTest, AnUpdateWeighsNoMoreThanTheSamplesItsNodeReported) {
  testing::FakeEdge* honest = AddEdge("honest", 100);
  testing::FakeEdge* liar = AddEdge("liar", 100);
  const v1::Job job = StartJob(OneRound(2));
  auto honest_task = honest->NextTask();
  auto liar_task = liar->NextTask();
  ASSERT_TRUE(honest_task.ok() && liar_task.ok());
  const std::string clipped =
      R"(fedge_cloud_poisoned_updates_total{action="clipped",reason="num_samples"})";
  const std::string refused =
      R"(fedge_cloud_poisoned_updates_total{action="refused",reason="num_samples"})";
  const double clipped_before = testing::MetricValue(clipped);
  const double refused_before = testing::MetricValue(refused);

  // 2^62 is past any plausible bound: refused, and it cannot overflow the round's count.
  const std::string p = Payload(0.01f);
  grpc::Status st =
      testing::SendPayload(liar->stub(), "liar", *liar_task, p, v1::F32, int64_t{1} << 62);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << st.error_message();
  EXPECT_NE(st.error_message().find("--max_update_samples"), std::string::npos);
  EXPECT_EQ(testing::MetricValue(refused), refused_before + 1);

  // Below the bound but above what the node said it holds: it weighs what the node said.
  st = testing::SendPayload(liar->stub(), "liar", *liar_task, p, v1::F32, 10'000'000);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(testing::MetricValue(clipped), clipped_before + 1);
  st = testing::SendPayload(honest->stub(), "honest", *honest_task, Payload(0.03f), v1::F32, 100);
  ASSERT_TRUE(st.ok()) << st.error_message();

  auto done = testing::WaitForJob(admin_.get(), job.id(), absl::Seconds(60));
  ASSERT_TRUE(done.ok()) << done.status();
  ASSERT_EQ(done->state(), v1::JOB_SUCCEEDED) << done->error();
  ASSERT_EQ(done->rounds_size(), 1);
  // The liar weighs what it reported plus a quarter for new data: the round counts 225
  // samples, not ten million.
  EXPECT_EQ(done->rounds(0).samples(), 225);
  auto ctx = testing::Context();
  v1::GetVersionRequest req;
  req.set_model("m");
  req.set_version(2);
  v1::Version version;
  ASSERT_TRUE(admin_->GetVersion(ctx.get(), req, &version).ok());
  std::map<std::string, int64_t> samples;
  for (const auto& p : version.participants()) samples[p.node_id()] = p.num_samples();
  EXPECT_EQ(samples["liar"], 125);
  EXPECT_EQ(samples["honest"], 100);
  // Nodes list a page at a time, in id order, with what each reported.
  std::vector<std::string> listed;
  v1::ListNodesRequest nodes_req;
  nodes_req.set_limit(1);
  for (int page = 0; page < 3; ++page) {
    v1::ListNodesResponse nodes;
    ctx = testing::Context();
    ASSERT_TRUE(admin_->ListNodes(ctx.get(), nodes_req, &nodes).ok());
    ASSERT_EQ(nodes.nodes_size(), 1);
    listed.push_back(nodes.nodes(0).node_id());
    EXPECT_EQ(nodes.nodes(0).local_samples(), 100);
    if (nodes.next_page_token().empty()) break;
    nodes_req.set_page_token(nodes.next_page_token());
  }
  EXPECT_EQ(listed, (std::vector<std::string>{"honest", "liar"}));
}

TEST_F(HostileFleetTest, OneNodesIdleStreamsDoNotStarveAnotherNodesUpload) {
  testing::FakeEdge* honest = AddEdge("honest", 100);
  const v1::Job job = StartJob(OneRound(1));
  auto task = honest->NextTask();
  ASSERT_TRUE(task.ok()) << task.status();

  // The hostile node opens 200 upload streams and sends nothing on any of them, over a
  // connection of its own.
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  auto stub = v1::Fleet::NewStub(grpc::CreateCustomChannel(
      absl::StrCat("127.0.0.1:", cloud_->fleet_port()), grpc::InsecureChannelCredentials(), args));
  struct Idle {
    std::unique_ptr<grpc::ClientContext> ctx;
    v1::UploadResponse resp;
    std::unique_ptr<grpc::ClientWriter<v1::UploadRequest>> writer;
  };
  std::vector<std::unique_ptr<Idle>> idle;
  for (int i = 0; i < 200; ++i) {
    auto s = std::make_unique<Idle>();
    s->ctx = testing::Context("hog", absl::Seconds(120));
    s->writer = stub->UploadUpdate(s->ctx.get(), &s->resp);
    idle.push_back(std::move(s));
  }
  // The honest node's upload goes through while they are open.
  const auto start = std::chrono::steady_clock::now();
  grpc::Status st =
      testing::SendPayload(honest->stub(), "honest", *task, Payload(0.01f), v1::F32, 100);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_TRUE(st.ok()) << st.error_message();
  RecordProperty("honest_upload_seconds", absl::StrCat(seconds));
  // The hog holds its four slots; every other stream of its was refused at once, by the
  // stream limit or, past its burst of calls, by the rate limit.
  int refused = 0;
  int by_streams = 0;
  for (auto& s : idle) {
    // A held stream ends with its client's end of stream (no header: INVALID_ARGUMENT).
    s->writer->WritesDone();
    grpc::Status end = s->writer->Finish();
    if (end.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) {
      ++refused;
      if (end.error_message().find("transfers open") != std::string::npos) ++by_streams;
    }
  }
  EXPECT_EQ(refused, 196);
  EXPECT_GE(by_streams, 90);
  auto done = testing::WaitForJob(admin_.get(), job.id(), absl::Seconds(60));
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_EQ(done->state(), v1::JOB_SUCCEEDED) << done->error();
}

TEST_F(HostileFleetTest, ANodeInventingDigestsKeepsOnlyAFewPartFiles) {
  testing::FakeEdge* node = AddEdge("inventor", 100);
  StartJob(OneRound(1));
  auto task = node->NextTask();
  ASSERT_TRUE(task.ok()) << task.status();
  const std::string uploads = dir_.path() + "/uploads";
  for (int i = 0; i < 20; ++i) {
    std::string payload = Payload(0.01f + static_cast<float>(i));
    grpc::Status st =
        UploadPrefix(testing::HeaderFor(*task, payload, v1::F32, 100), payload, 1000, "inventor");
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << st.error_message();
    EXPECT_LE(CountParts(uploads), 4) << i;
  }
  EXPECT_EQ(CountParts(uploads), 4);
}

TEST_F(HostileFleetTest, OversizedSessionReportsAreDroppedAndListsStillWork) {
  testing::FakeEdge* node = AddEdge("flooder", 100, "epoch-1");
  // A 1.1 MB drift report, and one with 5,000 metric names.
  v1::EdgeMessage drift;
  drift.set_message_id(1);
  drift.mutable_drift()->set_model("m");
  drift.mutable_drift()->add_drifted_features(std::string(1100 * 1000, 'f'));
  ASSERT_TRUE(node->Send(drift));
  v1::EdgeMessage metrics;
  metrics.set_message_id(2);
  for (int i = 0; i < 5000; ++i) {
    (*metrics.mutable_metrics()->mutable_values())[absl::StrCat("m", i)] = i;
  }
  ASSERT_TRUE(node->Send(metrics));
  // A bounded one after them is applied.
  v1::EdgeMessage fine;
  fine.set_message_id(3);
  fine.mutable_drift()->set_model("m");
  fine.mutable_drift()->add_drifted_features("temperature");
  (*fine.mutable_drift()->mutable_psi())["temperature"] = 0.4;
  ASSERT_TRUE(node->Send(fine));
  // All three are acknowledged, so the edge deletes them.
  uint64_t acked = 0;
  v1::CloudMessage m;
  while (acked < 3 && node->Next(&m)) {
    if (m.has_ack()) acked = m.ack().applied_message_id();
  }
  EXPECT_EQ(acked, 3u);
  // Only the bounded report became an event, and listing events works.
  std::vector<v1::Event> events = testing::ListEvents(admin_.get(), {"drift."});
  ASSERT_EQ(events.size(), 1u);
  EXPECT_NE(events[0].message().find("temperature"), std::string::npos);
  // Nothing of the dropped reports reached the inbox.
  auto rows = testing::QueryFile(dir_.path() + "/inbox.db",
                                 "SELECT COUNT(*), COALESCE(MAX(LENGTH(proto)), 0) FROM reports");
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0][0], "1");
  EXPECT_LT(std::stoll(rows[0][1]), 1000);
}

TEST_F(HostileFleetTest, ASessionFloodIsSlowedToTheRateThenServed) {
  testing::FakeEdge* node = AddEdge("chatty", 100, "epoch-1");
  const std::string paced = R"(fedge_cloud_calls_limited_total{limit="session_rate"})";
  const double before = testing::MetricValue(paced);
  // 1200 heartbeats at once: the first 1000 (the burst) are read at once, the rest at 100/s.
  v1::EdgeMessage hb;
  hb.mutable_heartbeat()->set_sent_unix_ms(1);
  for (int i = 0; i < 1200; ++i) ASSERT_TRUE(node->Send(hb)) << i;
  // A report behind them is still read and applied, once the flood has been paced through.
  v1::EdgeMessage report;
  report.set_message_id(1);
  (*report.mutable_metrics()->mutable_values())["samples_total"] = 5;
  ASSERT_TRUE(node->Send(report));
  const absl::Time start = absl::Now();
  uint64_t acked = 0;
  v1::CloudMessage m;
  while (acked < 1 && node->Next(&m)) {
    if (m.has_ack()) acked = m.ack().applied_message_id();
  }
  EXPECT_EQ(acked, 1u);
  EXPECT_GT(testing::MetricValue(paced), before);
  // Paced, not refused: about 200 heartbeats at 100/s.
  EXPECT_GE(absl::Now() - start, absl::Seconds(1));
}

TEST_F(HostileFleetTest, TagsAreBoundedAndVersionsArePaged) {
  auto ctx = testing::Context();
  v1::SetTagsRequest tags;
  tags.set_model("m");
  tags.set_version(1);
  (*tags.mutable_tags())["big"] = std::string(1 << 20, 'x');
  v1::Version out;
  grpc::Status st = admin_->SetTags(ctx.get(), tags, &out);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_LT(st.error_message().size(), 400u) << st.error_message().substr(0, 400);
  tags.clear_tags();
  for (int i = 0; i < 65; ++i) (*tags.mutable_tags())[absl::StrCat("k", i)] = "v";
  ctx = testing::Context();
  EXPECT_EQ(admin_->SetTags(ctx.get(), tags, &out).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  tags.clear_tags();
  (*tags.mutable_tags())["owner"] = "ml-team";
  ctx = testing::Context();
  ASSERT_TRUE(admin_->SetTags(ctx.get(), tags, &out).ok());
  EXPECT_EQ(out.tags().at("owner"), "ml-team");
  // A reason past its bound is refused too, and nothing is changed.
  v1::SetTagsRequest long_reason;
  long_reason.set_model("m");
  long_reason.set_version(1);
  (*long_reason.mutable_tags())["owner"] = "someone-else";
  long_reason.set_reason(std::string(5000, 'r'));
  ctx = testing::Context();
  EXPECT_EQ(admin_->SetTags(ctx.get(), long_reason, &out).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);

  // Two versions, listed one per page.
  ASSERT_TRUE(testing::Register(admin_.get(), testing::SyntheticModelHeader("m")).ok());
  v1::ListVersionsRequest list;
  list.set_model("m");
  list.set_limit(1);
  v1::ListVersionsResponse page;
  ctx = testing::Context();
  ASSERT_TRUE(admin_->ListVersions(ctx.get(), list, &page).ok());
  ASSERT_EQ(page.versions_size(), 1);
  EXPECT_EQ(page.versions(0).version(), 1);
  EXPECT_EQ(page.versions(0).tags().at("owner"), "ml-team");
  EXPECT_EQ(page.next_page_token(), "1");
  list.set_page_token(page.next_page_token());
  ctx = testing::Context();
  ASSERT_TRUE(admin_->ListVersions(ctx.get(), list, &page).ok());
  ASSERT_EQ(page.versions_size(), 1);
  EXPECT_EQ(page.versions(0).version(), 2);
  EXPECT_TRUE(page.next_page_token().empty());
  // A token no response gave is refused.
  list.set_page_token("not-a-version");
  ctx = testing::Context();
  EXPECT_EQ(admin_->ListVersions(ctx.get(), list, &page).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(HostileFleetTest, AnArtifactThatRottedOnDiskIsNeverExportedAsComplete) {
  const std::string path = cloud_->registry()->BlobPath(base_.sha256());
  {
    std::FILE* f = std::fopen(path.c_str(), "r+b");
    ASSERT_NE(f, nullptr);
    std::fseek(f, 100, SEEK_SET);
    const int c = std::fgetc(f);
    std::fseek(f, 100, SEEK_SET);
    std::fputc(c ^ 0x40, f);
    std::fclose(f);
  }
  auto ctx = testing::Context();
  v1::GetVersionRequest req;
  req.set_model("m");
  req.set_version(1);
  auto reader = admin_->DownloadVersion(ctx.get(), req);
  v1::Chunk chunk;
  while (reader->Read(&chunk)) {
  }
  grpc::Status st = reader->Finish();
  EXPECT_EQ(st.error_code(), grpc::StatusCode::DATA_LOSS);
  EXPECT_NE(st.error_message().find("corrupt"), std::string::npos) << st.error_message();
  EXPECT_NE(st.error_message().find("retrying cannot help"), std::string::npos);
}

TEST_F(HostileFleetTest, ARoundThatCannotReachItsMinimumFailsAtOnceNamingEachNode) {
  testing::FakeEdge* broken = AddEdge("broken", 100);
  testing::FakeEdge* quiet = AddEdge("quiet", 100);
  testing::FakeEdge* steady = AddEdge("steady", 100);
  v1::JobSpec spec = OneRound(3);
  spec.set_min_clients(2);
  spec.set_max_round_retries(0);  // one attempt: its timeout is a minute
  const v1::Job job = StartJob(spec);
  auto broken_task = broken->NextTask();
  auto quiet_task = quiet->NextTask();
  auto steady_task = steady->NextTask();
  ASSERT_TRUE(broken_task.ok() && quiet_task.ok() && steady_task.ok());
  const absl::Time start = absl::Now();
  // One update diverged and was refused, and its node reports the task failed, as an edge
  // does; the other node reports that its training failed.
  FlatTensor nan(static_cast<size_t>(num_elements_), 0.01f);
  nan[3] = std::numeric_limits<float>::quiet_NaN();
  grpc::Status st =
      testing::SendPayload(broken->stub(), "broken", *broken_task, EncodeF32(nan), v1::F32, 100);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  auto report_failed = [](testing::FakeEdge* edge, const std::string& task,
                          const std::string& message) {
    v1::EdgeMessage failed;
    failed.mutable_task_status()->set_task_id(task);
    failed.mutable_task_status()->set_state(v1::TASK_FAILED);
    failed.mutable_task_status()->set_message(message);
    return edge->Send(failed);
  };
  ASSERT_TRUE(report_failed(broken, broken_task->task_id(), st.error_message()));
  ASSERT_TRUE(report_failed(steady, steady_task->task_id(), "loss is NaN at epoch 0, batch 5"));
  auto done = testing::WaitForJob(admin_.get(), job.id(), absl::Seconds(50));
  ASSERT_TRUE(done.ok()) << done.status();
  ASSERT_EQ(done->state(), v1::JOB_FAILED);
  // It failed as soon as the minimum was out of reach, not at the round's 60 s deadline.
  EXPECT_LT(absl::Now() - start, absl::Seconds(30));
  EXPECT_NE(done->error().find("only 0 of the minimum 2 update(s) arrived"), std::string::npos)
      << done->error();
  EXPECT_NE(done->error().find("broken refused: update holds a non-finite value"),
            std::string::npos)
      << done->error();
  EXPECT_NE(done->error().find("steady failed: loss is NaN at epoch 0, batch 5"), std::string::npos)
      << done->error();
  ASSERT_EQ(done->rounds_size(), 1);
  // Once two of three were out, the third could not make up the minimum of two.
  EXPECT_NE(done->error().find("quiet late: no update yet when the round closed"),
            std::string::npos)
      << done->error();
  ASSERT_EQ(done->rounds(0).outcomes_size(), 3);
  EXPECT_EQ(done->rounds(0).outcomes(0).node_id(), "broken");
  EXPECT_EQ(done->rounds(0).outcomes(0).outcome(), "refused");
  EXPECT_EQ(done->rounds(0).outcomes(1).node_id(), "quiet");
  EXPECT_EQ(done->rounds(0).outcomes(1).outcome(), "late");
  EXPECT_EQ(done->rounds(0).outcomes(2).node_id(), "steady");
  EXPECT_EQ(done->rounds(0).outcomes(2).outcome(), "failed");
  // The job.failed event says the same.
  std::vector<v1::Event> events = testing::ListEvents(admin_.get(), {"job.failed"});
  ASSERT_EQ(events.size(), 1u);
  EXPECT_NE(events[0].message().find("broken refused"), std::string::npos) << events[0].message();
}

}  // namespace
}  // namespace fedge
