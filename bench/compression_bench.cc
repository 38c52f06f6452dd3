// Upload bytes per round and final accuracy of the demo task (the built-in MLP on the synthetic
// fleet, the demo's job settings) for each update encoding, against F32 in the same run.
//
// A real coordinator and real edges run in this process over loopback gRPC; each encoding is
// one training job from the same base version. Bytes are the serialized UploadRequest messages
// each edge sends (the header and every chunk message, as protobuf encodes them), summed over
// the job's updates and divided by its rounds.
//
//   build/bench/compression_bench [--rounds=10] [--sites=4] [--samples=2000]
//     [--encodings=f32,f16,int8,topk_int8] [--topk_fraction=0.01] [--quick]

#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "bench/upload_bytes.h"
#include "common/app/app.h"
#include "common/sync/mutex.h"
#include "common/torch/model.h"
#include "edge/server/edge_node.h"
#include "fedge/v1/admin.grpc.pb.h"
#include "fedge/v1/fleet.pb.h"
#include "glog/logging.h"
#include "tests/testing/fixtures.h"
#include "tests/testing/test_cloud.h"
#include "tests/testing/test_edges.h"

ABSL_FLAG(int, rounds, 10, "Rounds of each job (the demo runs 10).");
ABSL_FLAG(int, sites, 4, "Edges, one synthetic site each (the demo runs 4).");
ABSL_FLAG(int64_t, samples, 2000, "Rows of local data per edge (the demo's default).");
ABSL_FLAG(std::string, encodings, "f32,f16,int8,topk_int8", "Encodings to run, f32 first.");
ABSL_FLAG(double, topk_fraction, 0.01, "Share of values kept by topk and topk_int8.");
ABSL_FLAG(bool, quick, false, "A small run that only checks the bench works.");

namespace {

using fedge::Mutex;
using fedge::MutexLock;

struct Result {
  std::string encoding;
  double wire_bytes_per_round = 0;
  double payload_bytes_per_round = 0;
  double accuracy = 0;
  bool ok = false;
};

int Run() {
  const bool quick = absl::GetFlag(FLAGS_quick);
  const int rounds = quick ? 2 : absl::GetFlag(FLAGS_rounds);
  const int sites = quick ? 2 : absl::GetFlag(FLAGS_sites);
  const int64_t samples = quick ? 300 : absl::GetFlag(FLAGS_samples);
  const std::vector<std::string> encodings =
      quick ? std::vector<std::string>{"f32", "topk_int8"}
            : absl::StrSplit(absl::GetFlag(FLAGS_encodings), ',', absl::SkipEmpty());
  fedge::torchlib::SetNumThreads(1);

  fedge::testing::TempDir dir;
  auto cloud = fedge::testing::TestCloud::Start(dir.path() + "/cloud", absl::Milliseconds(200));
  if (!cloud.ok()) {
    std::fprintf(stderr, "compression_bench: %s\n", cloud.status().ToString().c_str());
    return 1;
  }
  Mutex mu;
  std::map<std::string, int64_t> wire_bytes;  // job id -> serialized upload bytes
  std::vector<std::unique_ptr<fedge::edge::EdgeNode>> edges;
  for (int i = 0; i < sites; ++i) {
    edges.push_back(fedge::testing::StartTestEdge(
        cloud->fleet_address(), absl::StrCat(dir.path(), "/edge", i), absl::StrCat("edge-", i), i,
        samples, [&mu, &wire_bytes, sites](fedge::edge::EdgeNode::Options* o) {
          o->synthetic_sites = sites;
          o->on_update_sent = [&mu, &wire_bytes](const fedge::v1::UpdateHeader& h,
                                                 const fedge::FlatTensor&) {
            MutexLock lock(&mu);
            wire_bytes[h.job_id()] += fedge::bench::UploadWireBytes(h);
          };
        }));
    if (edges.back() == nullptr) return 1;
  }
  fedge::v1::Admin::Stub* admin = cloud->admin.get();
  auto base = fedge::testing::Register(admin, fedge::testing::SyntheticModelHeader("demo"));
  if (!base.ok()) {
    std::fprintf(stderr, "compression_bench: %s\n", base.status().ToString().c_str());
    return 1;
  }
  const int64_t params = fedge::Schema::FromProto(base->schema()).NumElements();
  std::printf(
      "demo task: built-in mlp (%lld parameters), %d edges of %lld rows, %d rounds, lr 0.05, 1 "
      "epoch, batch 32; top-k keeps %.3g of the values\n",
      static_cast<long long>(params), sites, static_cast<long long>(samples), rounds,
      absl::GetFlag(FLAGS_topk_fraction));

  std::vector<Result> results;
  for (const std::string& encoding : encodings) {
    fedge::v1::StartJobRequest req;
    fedge::v1::JobSpec* spec = req.mutable_spec();
    spec->set_model("demo");
    spec->set_base_version(base->version());
    spec->set_rounds(rounds);
    spec->set_min_clients(sites);
    spec->set_seed(1);
    spec->set_round_timeout_ms(300000);
    spec->mutable_holdout()->mutable_synthetic()->set_num_sites(sites);
    spec->mutable_compression()->set_encoding(encoding);
    spec->mutable_compression()->set_topk_fraction(absl::GetFlag(FLAGS_topk_fraction));
    fedge::v1::Job job;
    auto ctx = fedge::testing::Context();
    grpc::Status st = admin->StartJob(ctx.get(), req, &job);
    Result r;
    r.encoding = encoding;
    if (!st.ok()) {
      std::fprintf(stderr, "compression_bench: %s: %s\n", encoding.c_str(),
                   st.error_message().c_str());
      return 1;
    }
    auto done = fedge::testing::WaitForJob(admin, job.id(), absl::Minutes(30));
    if (!done.ok() || done->state() != fedge::v1::JOB_SUCCEEDED) {
      std::fprintf(stderr, "compression_bench: the %s job did not succeed: %s\n", encoding.c_str(),
                   done.ok() ? done->error().c_str() : done.status().ToString().c_str());
      return 1;
    }
    int64_t payload = 0;
    for (const auto& round : done->rounds()) payload += round.bytes_up();
    {
      MutexLock lock(&mu);
      r.wire_bytes_per_round = static_cast<double>(wire_bytes[job.id()]) / rounds;
    }
    r.payload_bytes_per_round = static_cast<double>(payload) / rounds;
    r.accuracy = done->rounds(done->rounds_size() - 1).val_accuracy();
    r.ok = true;
    results.push_back(r);
  }
  edges.clear();
  cloud->server->Shutdown();

  std::printf("%-10s %14s %14s %10s %9s %10s\n", "encoding", "wire_B/round", "payload_B/rnd",
              "f32/this", "accuracy", "vs_f32_pts");
  const Result& f32 = results.front();
  for (const Result& r : results) {
    std::printf("%-10s %14.0f %14.0f %10.1f %9.4f %+10.2f\n", r.encoding.c_str(),
                r.wire_bytes_per_round, r.payload_bytes_per_round,
                f32.wire_bytes_per_round / r.wire_bytes_per_round, r.accuracy,
                100 * (r.accuracy - f32.accuracy));
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  fedge::app::ParseFlags(
      argc, argv,
      "compression_bench: upload bytes per round and final accuracy of the demo task for each "
      "update encoding.");
  google::InitGoogleLogging(argv[0]);
  FLAGS_minloglevel = 1;  // keep the INFO lines of the cloud and edges out of the table
  return Run();
}
