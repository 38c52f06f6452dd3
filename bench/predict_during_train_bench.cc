// Predict latency while the edge fine-tunes, in one run: Predict calls go through the real
// InferenceService over gRPC on loopback, (a) with no training, (b) during an uncapped
// fine-tune (the serving threads' setting, a whole core, normal priority) and (c) during a
// fine-tune under the edge's default limits (1 thread, half a core, nice +10). Prints p50 and
// p99 per phase, the training throughput, and the p99 ratios against (a). The phases take
// turns in short slices, round after round, so that other load on the machine falls on all
// three alike.
//
//   build/bench/predict_during_train_bench [--rounds=6] [--seconds=1] [--interval_us=1000]
//     [--hidden=256,128]

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/data/synthetic.h"
#include "common/net/servers.h"
#include "common/tensor/sha256.h"
#include "common/torch/model.h"
#include "edge/runtime/runtime.h"
#include "edge/serving/health.h"
#include "edge/serving/inference_service.h"
#include "fedge/v1/inference.grpc.pb.h"
#include "google/protobuf/util/json_util.h"

namespace {

using fedge::edge::runtime::TrainLimits;

struct Flags {
  int rounds = 6;
  double seconds = 1;      // per phase and round
  int interval_us = 1000;  // pause between a response and the next request
  std::vector<int> hidden = {256, 128};
  int64_t train_samples = 4000;
  int serving_threads = 1;
};

bool ParseFlags(int argc, char** argv, Flags* f) {
  for (int i = 1; i < argc; ++i) {
    std::pair<std::string, std::string> kv = absl::StrSplit(argv[i], absl::MaxSplits('=', 1));
    bool ok = false;
    if (kv.first == "--rounds") {
      ok = absl::SimpleAtoi(kv.second, &f->rounds) && f->rounds > 0;
    } else if (kv.first == "--seconds") {
      ok = absl::SimpleAtod(kv.second, &f->seconds) && f->seconds > 0;
    } else if (kv.first == "--interval_us") {
      ok = absl::SimpleAtoi(kv.second, &f->interval_us) && f->interval_us >= 0;
    } else if (kv.first == "--train_samples") {
      ok = absl::SimpleAtoi(kv.second, &f->train_samples) && f->train_samples > 0;
    } else if (kv.first == "--serving_threads") {
      ok = absl::SimpleAtoi(kv.second, &f->serving_threads) && f->serving_threads > 0;
    } else if (kv.first == "--hidden") {
      f->hidden.clear();
      ok = true;
      for (absl::string_view w : absl::StrSplit(kv.second, ',')) {
        int v = 0;
        ok = ok && absl::SimpleAtoi(w, &v) && v > 0;
        f->hidden.push_back(v);
      }
    }
    if (!ok) {
      std::fprintf(stderr, "bad flag %s\n", argv[i]);
      return false;
    }
  }
  return true;
}

std::string Archive(const Flags& flags) {
  fedge::torchlib::BuiltinOptions opt;
  const auto features = fedge::data::SyntheticFeatureNames({});
  opt.num_features = static_cast<int64_t>(features.size());
  opt.num_classes = static_cast<int64_t>(fedge::data::SyntheticLabels().size());
  opt.hidden = flags.hidden;
  opt.seed = 1;
  auto model = fedge::torchlib::Model::Builtin(opt);
  if (!model.ok()) {
    std::fprintf(stderr, "%s\n", model.status().ToString().c_str());
    std::exit(1);
  }
  fedge::v1::ModelContract c;
  for (const auto& f : features) c.add_feature_names(f);
  for (const auto& l : fedge::data::SyntheticLabels()) c.add_labels(l);
  std::string json;
  (void)google::protobuf::util::MessageToJsonString(c, &json);
  (*model)->SetExtraFile(fedge::torchlib::kContractFile, json);
  return *(*model)->Serialize();
}

struct Phase {
  std::string name;
  std::vector<double> latencies_ms;
  int64_t errors = 0;
  const TrainLimits* limits = nullptr;  // null: no training
  int64_t trained = 0;
  double seconds = 0;
};

double Percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t i = std::min(v.size() - 1, static_cast<size_t>(q * static_cast<double>(v.size())));
  return v[i];
}

// Predict back to back (with the pause) for `seconds`, one row at a time.
void Drive(fedge::v1::Inference::Stub* stub, const fedge::data::Dataset& rows, double seconds,
           int interval_us, Phase* phase) {
  const int64_t f = rows.num_features();
  const auto until = std::chrono::steady_clock::now() +
                     std::chrono::microseconds(static_cast<int64_t>(seconds * 1e6));
  for (int64_t i = 0; std::chrono::steady_clock::now() < until; ++i) {
    const int64_t r = i % rows.size();
    fedge::v1::PredictRequest req;
    req.mutable_instance()->mutable_features()->Add(rows.features.begin() + r * f,
                                                    rows.features.begin() + (r + 1) * f);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    fedge::v1::PredictResponse resp;
    const auto start = std::chrono::steady_clock::now();
    grpc::Status st = stub->Predict(&ctx, req, &resp);
    const double ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    if (st.ok()) {
      phase->latencies_ms.push_back(ms);
    } else {
      ++phase->errors;
    }
    if (interval_us > 0) std::this_thread::sleep_for(std::chrono::microseconds(interval_us));
  }
}

}  // namespace

int main(int argc, char** argv) {
  Flags flags;
  if (!ParseFlags(argc, argv, &flags)) return 2;
  fedge::torchlib::SetNumThreads(flags.serving_threads);
  char tmpl[] = "/tmp/fedge-bench-XXXXXX";
  const char* dir = mkdtemp(tmpl);
  if (dir == nullptr) return 1;

  auto rt = fedge::edge::runtime::Runtime::Open({dir, {}});
  if (!rt.ok()) return 1;
  const std::string archive = Archive(flags);
  fedge::v1::VersionRef ref;
  ref.set_model("m");
  ref.set_version(1);
  ref.set_sha256(fedge::Sha256Hex(archive));
  if (!(*rt)->Activate(ref, archive).ok()) return 1;
  auto base = fedge::torchlib::Model::Load(archive);
  if (!base.ok()) return 1;
  fedge::edge::serving::HealthTracker health({});
  fedge::edge::serving::InferenceService service(rt->get(), &health);
  auto server = fedge::net::StartGrpcServer({"127.0.0.1:0", {{&service, "fedge.v1.Inference"}}});
  if (!server.ok()) return 1;
  auto stub = fedge::v1::Inference::NewStub(
      fedge::net::MakeChannel(absl::StrCat("127.0.0.1:", server->port)));

  const fedge::data::Dataset queries = fedge::data::GenerateHoldout({}, 1000);
  const fedge::data::Dataset train = fedge::data::GenerateSite({}, 0, flags.train_samples);
  const fedge::data::Dataset no_holdout;
  fedge::v1::TrainTask task;
  task.set_schema_hash((*base)->schema().Hash());
  task.set_learning_rate(0.01);
  task.set_epochs(1);
  task.set_batch_size(32);

  {
    Phase warmup;
    Drive(stub.get(), queries, 1.0, flags.interval_us, &warmup);
  }
  std::printf(
      "model: mlp hidden=%s, %zu features; training set %lld rows, batch 32; "
      "serving threads %d; %u cores; %d rounds of %.1f s per phase\n",
      absl::StrJoin(flags.hidden, ",").c_str(), queries.feature_names.size(),
      static_cast<long long>(flags.train_samples), flags.serving_threads,
      std::thread::hardware_concurrency(), flags.rounds, flags.seconds);

  TrainLimits uncapped;  // the process's intra-op threads (the serving setting), no cap
  TrainLimits capped;
  capped.threads = 1;
  capped.cpu_share = 0.5;
  capped.nice = 10;
  std::vector<Phase> phases(3);
  phases[0].name = "a) no training";
  phases[1].name = "b) uncapped fine-tune";
  phases[1].limits = &uncapped;
  phases[2].name = "c) capped fine-tune";
  phases[2].limits = &capped;
  auto slice = [&](Phase& phase) {
    std::atomic<bool> stop{false};
    std::atomic<int64_t> trained{0};
    std::thread trainer;
    const auto start = std::chrono::steady_clock::now();
    if (phase.limits != nullptr) {
      trainer = std::thread([&] {
        while (!stop) {
          auto update =
              fedge::edge::runtime::Runtime::Train(task, archive, train, no_holdout, *phase.limits);
          if (!update.ok()) {
            std::fprintf(stderr, "training failed: %s\n", update.status().ToString().c_str());
            return;
          }
          trained += update->num_samples;
        }
      });
    }
    Drive(stub.get(), queries, flags.seconds, flags.interval_us, &phase);
    stop = true;
    if (trainer.joinable()) trainer.join();
    phase.trained += trained.load();
    phase.seconds +=
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };
  for (int round = 0; round < flags.rounds; ++round) {
    for (Phase& phase : phases) slice(phase);
  }

  std::printf("%-24s %9s %7s %9s %9s %9s %16s\n", "phase", "requests", "errors", "p50_ms", "p99_ms",
              "max_ms", "train_samples/s");
  for (const Phase& p : phases) {
    std::printf("%-24s %9zu %7lld %9.3f %9.3f %9.3f %16.0f\n", p.name.c_str(),
                p.latencies_ms.size(), static_cast<long long>(p.errors),
                Percentile(p.latencies_ms, 0.5), Percentile(p.latencies_ms, 0.99),
                Percentile(p.latencies_ms, 1.0), static_cast<double>(p.trained) / p.seconds);
  }
  const double a99 = Percentile(phases[0].latencies_ms, 0.99);
  std::printf("p99 ratio uncapped/none: %.2f\n", Percentile(phases[1].latencies_ms, 0.99) / a99);
  std::printf("p99 ratio capped/none:   %.2f\n", Percentile(phases[2].latencies_ms, 0.99) / a99);

  fedge::net::StopGrpcServer(&*server, std::chrono::seconds(5));
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  return 0;
}
