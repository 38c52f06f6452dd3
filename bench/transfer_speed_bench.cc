// Upload throughput of a large update through the real Fleet.UploadUpdate RPC, against a bare
// gRPC client stream of the same messages in the same run.
//
// An in-process coordinator on 127.0.0.1 runs a one-round job over a built-in MLP big enough
// that its F32 update is about 100 MB; one hand-driven edge per upload takes a task. The
// baseline is a ByteSink service (bench/byte_sink.proto) on its own server with the same
// options, which reads the same UploadRequest messages and only counts their bytes. Both
// clients send the header and then the payload in the edge's 1 MiB chunks, with the same
// client code. To show where the difference goes, the sink also runs with UploadUpdate's own
// steps added one at a time (the digest alone, then the UploadStage that UploadUpdate uses: a
// part file with the digest on a second thread, then the validation and fold over the mapped
// part), and each step is timed alone. All kinds take turns, so that other load on the machine falls on each alike.
//
//   build/bench/transfer_speed_bench [--hidden=5000,5000] [--reps=5] [--quick]

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "bench/byte_sink.grpc.pb.h"
#include "cloud/api/upload_stage.h"
#include "cloud/aggregation/robust.h"
#include "common/app/app.h"
#include "common/codec/codec.h"
#include "common/net/servers.h"
#include "common/tensor/flat.h"
#include "common/tensor/sha256.h"
#include "fedge/v1/admin.grpc.pb.h"
#include "fedge/v1/fleet.grpc.pb.h"
#include "glog/logging.h"
#include "tests/testing/fixtures.h"
#include "tests/testing/test_cloud.h"

ABSL_FLAG(std::string, hidden, "5000,5000",
          "Hidden widths of the built-in MLP; 5000,5000 gives an update of about 100 MB.");
ABSL_FLAG(int, reps, 5, "Uploads of each kind.");
ABSL_FLAG(bool, quick, false, "A small, fast run (for ctest).");

namespace {

using Clock = std::chrono::steady_clock;
constexpr size_t kChunkBytes = 1 << 20;  // the edge's UploadUpdate chunk (edge/agent/agent.cc)

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// Reads the UploadRequest stream and counts its bytes. The client's "x-bench-steps" metadata
// adds UploadUpdate's own work, one letter per step, so that each step's cost shows in the
// same pipeline: h = sha256 of each chunk on the handler thread; s = UploadUpdate's staging
// (cloud::api::UploadStage: a part file, the digest on a second thread); f = the finite check,
// norm bound and FedAvg fold over the staged payload at the end.
// What JobManager::SubmitUpdate does with a staged F32 payload: one streaming pass for the
// finite check and the norm bound, then a block-by-block fold into the running sum.
bool InspectAndFold(absl::string_view payload, int64_t elements,
                    fedge::cloud::aggregation::WeightedMean* mean) {
  const fedge::codec::CodecParams f32;
  auto stats = fedge::codec::Inspect(payload, f32, elements);
  if (!stats.ok() || !stats->all_finite || stats->l2_norm > 1e6) return false;
  return mean->FoldEncoded(payload, f32, 100).ok();
}

class ByteSinkService final : public fedge::bench::ByteSink::Service {
 public:
  // Like a job's round, the FedAvg sum exists before the first upload arrives.
  ByteSinkService(int64_t elements, std::string part_path)
      : elements_(elements),
        part_path_(std::move(part_path)),
        avg_(std::make_unique<fedge::cloud::aggregation::WeightedMean>(elements)) {}

  grpc::Status Push(grpc::ServerContext* context,
                    grpc::ServerReader<fedge::v1::UploadRequest>* reader,
                    fedge::v1::UploadResponse* response) override {
    std::string steps;
    auto it = context->client_metadata().find("x-bench-steps");
    if (it != context->client_metadata().end()) steps.assign(it->second.data(), it->second.size());
    const bool hash = absl::StrContains(steps, "h"), stage = absl::StrContains(steps, "s"),
               fold = absl::StrContains(steps, "f");
    fedge::v1::UploadRequest msg;
    int64_t bytes = 0;
    fedge::Sha256 digest;
    std::unique_ptr<fedge::cloud::api::UploadStage> staged;
    while (reader->Read(&msg)) {
      if (msg.has_header()) {
        if (stage) {
          staged = std::make_unique<fedge::cloud::api::UploadStage>(part_path_,
                                                                    msg.header().total_size());
          if (!staged->Open(0).ok()) return grpc::Status(grpc::StatusCode::INTERNAL, "open");
        }
        continue;
      }
      bytes += static_cast<int64_t>(msg.chunk().data().size());
      if (hash) digest.Update(msg.chunk().data());
      if (stage && !staged->Append(std::move(*msg.mutable_chunk()->mutable_data())).ok()) {
        return grpc::Status(grpc::StatusCode::INTERNAL, "append");
      }
    }
    if (hash) digest.HexDigest();  // the final block, as UploadUpdate computes it
    if (stage) {
      staged->FinishDigest();
      auto payload = staged->Contents();
      if (!payload.ok()) return grpc::Status(grpc::StatusCode::INTERNAL, "map");
      if (fold && !InspectAndFold(*payload, elements_, avg_.get())) {
        return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "bad update");
      }
      staged->Discard();
    }
    response->set_received_bytes(bytes);
    return grpc::Status::OK;
  }

 private:
  const int64_t elements_;
  const std::string part_path_;
  const std::unique_ptr<fedge::cloud::aggregation::WeightedMean> avg_;
};

// Sends the header, then the payload in wire chunks, as the edge does.
template <typename Writer>
grpc::Status Send(Writer* writer, const fedge::v1::UpdateHeader& header,
                  const std::string& payload) {
  fedge::v1::UploadRequest req;
  *req.mutable_header() = header;
  writer->Write(req);
  for (size_t off = 0; off < payload.size(); off += kChunkBytes) {
    fedge::v1::UploadRequest chunk;
    chunk.mutable_chunk()->set_offset(static_cast<int64_t>(off));
    chunk.mutable_chunk()->set_data(payload.substr(off, kChunkBytes));
    if (!writer->Write(chunk)) break;
  }
  writer->WritesDone();
  return writer->Finish();
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

// Times fn() and returns seconds.
template <typename Fn>
double Time(Fn fn) {
  const auto start = Clock::now();
  fn();
  return Seconds(start, Clock::now());
}

int Run() {
  std::vector<int> hidden;
  std::string hidden_flag = absl::GetFlag(FLAGS_hidden);
  int reps = absl::GetFlag(FLAGS_reps);
  if (absl::GetFlag(FLAGS_quick)) {
    hidden_flag = "256,128";
    reps = 2;
  }
  for (absl::string_view w : absl::StrSplit(hidden_flag, ',')) {
    int v = 0;
    if (!absl::SimpleAtoi(w, &v) || v <= 0) {
      std::fprintf(stderr, "--hidden takes positive widths\n");
      return 2;
    }
    hidden.push_back(v);
  }
  if (reps < 1) {
    std::fprintf(stderr, "--reps must be at least 1\n");
    return 2;
  }

  fedge::testing::TempDir dir;
  auto cloud = fedge::testing::TestCloud::Start(dir.path());
  if (!cloud.ok()) {
    std::fprintf(stderr, "cannot start the coordinator: %s\n", cloud.status().ToString().c_str());
    return 1;
  }
  fedge::v1::RegisterModelHeader model = fedge::testing::SyntheticModelHeader("big");
  for (int h : hidden) model.mutable_builtin()->add_hidden(h);
  auto version = fedge::testing::Register(cloud->admin.get(), model);
  if (!version.ok()) {
    std::fprintf(stderr, "cannot register the model: %s\n", version.status().ToString().c_str());
    return 1;
  }
  const int64_t elements = fedge::Schema::FromProto(version->schema()).NumElements();

  // One edge per upload, all in one round.
  std::vector<std::unique_ptr<fedge::testing::FakeEdge>> edges;
  for (int i = 0; i < reps; ++i) {
    edges.push_back(std::make_unique<fedge::testing::FakeEdge>(cloud->fleet_channel,
                                                               absl::StrCat("bench-", i)));
  }
  fedge::v1::StartJobRequest start;
  start.mutable_spec()->set_model("big");
  start.mutable_spec()->set_rounds(1);
  start.mutable_spec()->set_clients_per_round(reps);
  start.mutable_spec()->set_min_clients(reps);
  start.mutable_spec()->set_round_timeout_ms(600000);
  start.mutable_spec()->set_wait_for_clients_ms(60000);
  fedge::v1::Job job;
  {
    auto ctx = fedge::testing::Context();
    grpc::Status st = cloud->admin->StartJob(ctx.get(), start, &job);
    if (!st.ok()) {
      std::fprintf(stderr, "cannot start the job: %s\n", st.error_message().c_str());
      return 1;
    }
  }
  std::vector<fedge::v1::TrainTask> tasks;
  for (auto& edge : edges) {
    auto task = edge->NextTask();
    if (!task.ok()) {
      std::fprintf(stderr, "no task: %s\n", task.status().ToString().c_str());
      return 1;
    }
    tasks.push_back(*task);
  }

  // A small, finite delta, well inside the norm bound.
  fedge::FlatTensor delta(static_cast<size_t>(elements));
  for (size_t i = 0; i < delta.size(); ++i) delta[i] = 1e-5f * static_cast<float>(i % 17);
  const std::string payload = fedge::EncodeF32(delta);
  const std::string digest = fedge::Sha256Hex(payload);
  const double mb = static_cast<double>(payload.size()) / 1e6;

  ByteSinkService sink(elements, dir.path() + "/sink.part");
  fedge::net::GrpcServerOptions sink_opts;
  sink_opts.services = {{&sink, fedge::bench::ByteSink::service_full_name()}};
  auto sink_server = fedge::net::StartGrpcServer(sink_opts);
  if (!sink_server.ok()) {
    std::fprintf(stderr, "cannot start the sink: %s\n", sink_server.status().ToString().c_str());
    return 1;
  }
  auto sink_stub = fedge::bench::ByteSink::NewStub(
      fedge::net::MakeChannel(absl::StrCat("127.0.0.1:", sink_server->port)));
  auto fleet_stub = fedge::v1::Fleet::NewStub(cloud->fleet_channel);

  auto header_for = [&](const fedge::v1::TrainTask& task) {
    fedge::v1::UpdateHeader h;
    h.set_task_id(task.task_id());
    h.set_job_id(task.job_id());
    h.set_round(task.round());
    h.set_schema_hash(task.schema_hash());
    h.set_encoding(fedge::v1::F32);
    h.set_num_samples(100);
    h.set_total_size(static_cast<int64_t>(payload.size()));
    h.set_sha256(digest);
    return h;
  };
  auto push = [&](const std::string& steps) {
    auto ctx = fedge::testing::Context("sink", absl::Minutes(10));
    ctx->AddMetadata("x-bench-steps", steps);
    fedge::v1::UploadResponse resp;
    auto writer = sink_stub->Push(ctx.get(), &resp);
    return Send(writer.get(), header_for(fedge::v1::TrainTask()), payload);
  };

  std::printf(
      "model: built-in mlp hidden=%s, %lld parameters; F32 update %.1f MB in %zu-byte "
      "chunks; %d uploads of each kind, taking turns\n",
      absl::StrJoin(hidden, ",").c_str(), static_cast<long long>(elements), mb, kChunkBytes, reps);
  if (!push("").ok()) {
    std::fprintf(stderr, "the baseline stream failed\n");
    return 1;
  }
  // The bare stream first, then the sink with UploadUpdate's steps added one by one, then the
  // real RPC.
  struct Kind {
    std::string name;
    std::string steps;  // for the sink
    std::vector<double> mbps;
  };
  std::vector<Kind> kinds = {{"bare gRPC (ByteSink)", "", {}},
                             {"  + sha256 inline", "h", {}},
                             {"  + UploadStage", "s", {}},
                             {"  + validate, fold", "sf", {}},
                             {"Fleet.UploadUpdate", "", {}}};
  for (int i = 0; i < reps; ++i) {
    for (size_t k = 0; k < kinds.size(); ++k) {
      grpc::Status st;
      const bool real = k + 1 == kinds.size();
      const double seconds = Time([&] {
        if (!real) {
          st = push(kinds[k].steps);
          return;
        }
        auto ctx = fedge::testing::Context(edges[i]->node_id(), absl::Minutes(10));
        fedge::v1::UploadResponse resp;
        auto writer = fleet_stub->UploadUpdate(ctx.get(), &resp);
        st = Send(writer.get(), header_for(tasks[i]), payload);
      });
      if (!st.ok()) {
        std::fprintf(stderr, "%s failed: %s\n", kinds[k].name.c_str(), st.error_message().c_str());
        return 1;
      }
      kinds[k].mbps.push_back(mb / seconds);
    }
  }
  const double bare = Median(kinds.front().mbps);
  std::printf("%-22s %11s %8s %8s %8s\n", "stream", "median_MB/s", "min", "max", "vs_bare");
  for (const Kind& k : kinds) {
    std::printf("%-22s %11.0f %8.0f %8.0f %8.2f\n", k.name.c_str(), Median(k.mbps),
                *std::min_element(k.mbps.begin(), k.mbps.end()),
                *std::max_element(k.mbps.begin(), k.mbps.end()), Median(k.mbps) / bare);
  }
  const double upload = Median(kinds.back().mbps);
  std::printf("ratio UploadUpdate/bare (medians): %.2f (goal >= 0.7)\n", upload / bare);
  const double gap_ms = (mb / upload - mb / bare) * 1e3;

  // UploadUpdate's own work per update, each step timed apart on the same payload.
  std::vector<std::pair<std::string, double>> steps;
  {
    fedge::Sha256 h;
    steps.push_back({"sha256 of the chunks", Time([&] {
                       for (size_t off = 0; off < payload.size(); off += kChunkBytes) {
                         h.Update(absl::string_view(payload).substr(off, kChunkBytes));
                       }
                       if (h.HexDigest() != digest) std::printf("digest mismatch\n");
                     })});
  }
  const std::string part_path = dir.path() + "/bench.part";
  steps.push_back({"part file (write)", Time([&] {
                     std::ofstream part(part_path, std::ios::binary | std::ios::trunc);
                     for (size_t off = 0; off < payload.size(); off += kChunkBytes) {
                       const size_t n = std::min(kChunkBytes, payload.size() - off);
                       part.write(payload.data() + off, static_cast<std::streamsize>(n));
                       part.flush();
                     }
                   })});
  fedge::cloud::aggregation::WeightedMean fold(elements);
  steps.push_back({"map+inspect+fold", Time([&] {
                     // As UploadStage::Contents maps the part.
                     const int fd = ::open(part_path.c_str(), O_RDONLY | O_CLOEXEC);
                     void* map = ::mmap(nullptr, payload.size(), PROT_READ,
                                        MAP_SHARED | MAP_POPULATE, fd, 0);
                     if (fd < 0 || map == MAP_FAILED ||
                         !InspectAndFold(absl::string_view(static_cast<const char*>(map),
                                                           payload.size()),
                                         elements, &fold)) {
                       std::printf("validation failed\n");
                     }
                     if (map != MAP_FAILED) ::munmap(map, payload.size());
                     if (fd >= 0) ::close(fd);
                   })});
  std::filesystem::remove(part_path);
  std::printf(
      "the steps alone, each timed apart on the same payload "
      "(the upload takes %.0f ms more than the bare stream):\n",
      gap_ms);
  double sum = 0;
  for (const auto& [name, s] : steps) {
    std::printf("  %-26s %8.1f ms %8.0f MB/s\n", name.c_str(), s * 1e3, mb / s);
    sum += s;
  }
  std::printf("  %-26s %8.1f ms\n", "sum", sum * 1e3);

  for (auto& edge : edges) edge->Close();
  auto done = fedge::testing::WaitForJob(cloud->admin.get(), job.id(), absl::Minutes(5));
  if (!done.ok() || done->state() != fedge::v1::JOB_SUCCEEDED) {
    std::printf("note: the job did not finish cleanly: %s\n",
                done.ok() ? fedge::v1::JobState_Name(done->state()).c_str()
                          : done.status().ToString().c_str());
  }
  fedge::net::StopGrpcServer(&*sink_server, std::chrono::milliseconds(100));
  cloud->server->Shutdown();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  fedge::app::ParseFlags(
      argc, argv,
      "transfer_speed_bench: MB/s of a large update through Fleet.UploadUpdate on loopback, "
      "against a bare gRPC client stream of the same messages.");
  // The coordinator's INFO lines would bury the table; warnings and errors still show.
  FLAGS_logtostderr = true;
  FLAGS_minloglevel = google::GLOG_WARNING;
  google::InitGoogleLogging(argv[0]);
  return Run();
}
