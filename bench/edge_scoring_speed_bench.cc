// Edge scoring speed against bare gRPC, in one run. The built-in MLP is served by the real
// InferenceService (with the health tracker, drift watch and remembered inputs the edge node
// wires in) over gRPC on 127.0.0.1; closed-loop clients, each on its own connection, call
// Predict (one row) or PredictBatch (--batch rows) back to back. The baseline is a bench-only
// echo service on a server built the same way, answering each request with the same message,
// driven the same way at the same concurrency. Both are measured idle and while a local
// fine-tune runs under the edge's default limits (1 thread, half a core, nice +10). The
// service and the echo take turns in short slices, round after round, so that other load on
// the machine falls on both alike.
//
//   build/bench/edge_scoring_speed_bench [--rounds=3] [--seconds=1] [--clients=1,16]
//     [--batch=32] [--hidden=64,32] [--quick]

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <thread>
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
#include "common/app/app.h"
#include "common/data/synthetic.h"
#include "common/net/servers.h"
#include "common/tensor/sha256.h"
#include "common/torch/model.h"
#include "echo.grpc.pb.h"
#include "edge/runtime/runtime.h"
#include "edge/samples/sample_store.h"
#include "edge/serving/drift_watch.h"
#include "edge/serving/health.h"
#include "edge/serving/inference_service.h"
#include "fedge/v1/inference.grpc.pb.h"
#include "google/protobuf/util/json_util.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"

ABSL_FLAG(int, rounds, 3, "Rounds; each runs every configuration once on each side.");
ABSL_FLAG(double, seconds, 1.0, "Length of one slice (one side, one configuration, one round).");
ABSL_FLAG(std::string, clients, "1,16", "Concurrent clients to measure at.");
ABSL_FLAG(int, batch, 32, "Rows per PredictBatch request.");
ABSL_FLAG(std::string, hidden, "64,32", "Hidden widths of the built-in MLP (its default).");
ABSL_FLAG(int64_t, train_rows, 4000, "Rows the background fine-tune trains on.");
ABSL_FLAG(std::string, modes, "single,batch", "Predict (single), PredictBatch (batch) or both.");
ABSL_FLAG(bool, training, true, "Also measure during a local fine-tune.");
ABSL_FLAG(int, serving_threads, 1, "LibTorch intra-op threads for serving (the edge's --threads).");
ABSL_FLAG(bool, quick, false,
          "A small smoke run (one round of 0.2 s slices, 500 training rows) that only checks "
          "that everything runs.");

namespace {

using Clock = std::chrono::steady_clock;

// CPU time of the calling thread, which other load on the machine does not inflate.
double ThreadCpuMicros() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) * 1e6 + static_cast<double>(ts.tv_nsec) / 1e3;
}

double Percentile(std::vector<double>& v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t i = std::min(v.size() - 1, static_cast<size_t>(q * static_cast<double>(v.size())));
  return v[i];
}

// Answers each request with itself.
class EchoService final : public fedge::bench::Echo::Service {
  grpc::Status Echo(grpc::ServerContext*, const fedge::v1::PredictRequest* request,
                    fedge::v1::PredictRequest* response) override {
    *response = *request;
    return grpc::Status::OK;
  }
  grpc::Status EchoBatch(grpc::ServerContext*, const fedge::v1::PredictBatchRequest* request,
                         fedge::v1::PredictBatchRequest* response) override {
    *response = *request;
    return grpc::Status::OK;
  }
};

// What one slice measured.
struct Tally {
  std::vector<double> latencies_ms;
  int64_t errors = 0;
  double seconds = 0;
};

// One closed-loop call: returns whether it succeeded. `client` picks the connection, `i` the
// request.
using Call = std::function<bool(int client, int64_t i)>;

// `clients` threads call back to back for `seconds`.
void Drive(int clients, double seconds, const Call& call, Tally* tally) {
  std::vector<Tally> per(static_cast<size_t>(clients));
  std::vector<std::thread> threads;
  const auto start = Clock::now();
  const auto until = start + std::chrono::microseconds(static_cast<int64_t>(seconds * 1e6));
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&, c] {
      Tally& t = per[static_cast<size_t>(c)];
      for (int64_t i = c * 7919; Clock::now() < until; ++i) {
        const auto begin = Clock::now();
        const bool ok = call(c, i);
        const double ms = std::chrono::duration<double, std::milli>(Clock::now() - begin).count();
        if (ok) {
          t.latencies_ms.push_back(ms);
        } else {
          ++t.errors;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  tally->seconds += std::chrono::duration<double>(Clock::now() - start).count();
  for (Tally& t : per) {
    tally->latencies_ms.insert(tally->latencies_ms.end(), t.latencies_ms.begin(),
                               t.latencies_ms.end());
    tally->errors += t.errors;
  }
}

// One connection per client: distinct channel arguments keep gRPC from sharing a subchannel.
std::shared_ptr<grpc::Channel> ClientChannel(int port, int client) {
  grpc::ChannelArguments args;
  args.SetInt("fedge.bench.client", client);
  return grpc::CreateCustomChannel(absl::StrCat("127.0.0.1:", port),
                                   grpc::InsecureChannelCredentials(), args);
}

std::chrono::system_clock::time_point Deadline() {
  return std::chrono::system_clock::now() + std::chrono::seconds(10);
}

struct Config {
  bool batch = false;
  int clients = 1;
  bool training = false;
  Tally service;
  Tally echo;
};

std::vector<int> ParseList(const std::string& s, const char* name) {
  std::vector<int> out;
  for (absl::string_view w : absl::StrSplit(s, ',')) {
    int v = 0;
    if (!absl::SimpleAtoi(w, &v) || v < 1) {
      std::fprintf(stderr, "bad --%s entry '%s'\n", name, std::string(w).c_str());
      std::exit(2);
    }
    out.push_back(v);
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  fedge::app::ParseFlags(
      argc, argv, "edge_scoring_speed_bench: the edge's Inference API against a bare gRPC echo.");
  const bool quick = absl::GetFlag(FLAGS_quick);
  const int rounds = quick ? 1 : absl::GetFlag(FLAGS_rounds);
  const double seconds = quick ? 0.2 : absl::GetFlag(FLAGS_seconds);
  const int64_t train_rows = quick ? 500 : absl::GetFlag(FLAGS_train_rows);
  const int batch = absl::GetFlag(FLAGS_batch);
  const std::vector<int> client_counts = ParseList(absl::GetFlag(FLAGS_clients), "clients");
  const std::vector<int> hidden = ParseList(absl::GetFlag(FLAGS_hidden), "hidden");
  if (rounds < 1 || seconds <= 0 || batch < 1 || train_rows < 2) {
    std::fprintf(stderr, "--rounds, --seconds, --batch and --train_rows must be positive\n");
    return 2;
  }
  fedge::torchlib::SetNumThreads(absl::GetFlag(FLAGS_serving_threads));

  char tmpl[] = "/tmp/fedge-bench-XXXXXX";
  const char* dir = mkdtemp(tmpl);
  if (dir == nullptr) return 1;

  // The model, as the cloud registers a built-in MLP: normalization in the module.
  const fedge::data::Dataset train = fedge::data::GenerateSite({}, 0, train_rows);
  const fedge::data::Dataset queries = fedge::data::GenerateHoldout({}, 1000);
  const auto stats = fedge::data::ComputeStats(train);
  fedge::torchlib::BuiltinOptions opt;
  opt.num_features = train.num_features();
  opt.num_classes = static_cast<int64_t>(fedge::data::SyntheticLabels().size());
  opt.hidden = hidden;
  opt.norm_mean = stats.mean;
  opt.norm_std = stats.std;
  opt.seed = 1;
  auto model = fedge::torchlib::Model::Builtin(opt);
  if (!model.ok()) {
    std::fprintf(stderr, "%s\n", model.status().ToString().c_str());
    return 1;
  }
  fedge::v1::ModelContract contract;
  for (const auto& f : train.feature_names) contract.add_feature_names(f);
  for (const auto& l : fedge::data::SyntheticLabels()) contract.add_labels(l);
  contract.set_architecture("mlp");
  contract.mutable_normalization()->mutable_mean()->Add(stats.mean.begin(), stats.mean.end());
  contract.mutable_normalization()->mutable_std()->Add(stats.std.begin(), stats.std.end());
  contract.mutable_normalization()->set_in_module(true);
  std::string json;
  (void)google::protobuf::util::MessageToJsonString(contract, &json);
  (*model)->SetExtraFile(fedge::torchlib::kContractFile, json);
  const std::string archive = *(*model)->Serialize();

  // The serving side, wired as the edge node wires it.
  fedge::edge::serving::DriftWatch::Options drift_opts;
  // The reference is drawn like the queries, so the watch sees no drift (and logs none).
  const fedge::data::Dataset reference = fedge::data::GenerateHoldout({}, 2000);
  drift_opts.reference = [&reference] { return reference; };
  drift_opts.monitor.window = 500;  // fedge-edge's --drift_window
  fedge::edge::serving::DriftWatch drift(drift_opts);
  fedge::edge::runtime::Runtime::Options rt_opts;
  rt_opts.state_dir = dir;
  rt_opts.on_loaded = [&drift](const fedge::edge::runtime::LoadedModel& loaded) {
    (void)drift.Prepare(loaded);
  };
  auto rt = fedge::edge::runtime::Runtime::Open(rt_opts);
  if (!rt.ok()) return 1;
  fedge::v1::VersionRef ref;
  ref.set_model("m");
  ref.set_version(1);
  ref.set_sha256(fedge::Sha256Hex(archive));
  if (absl::Status st = (*rt)->Activate(ref, archive); !st.ok()) {
    std::fprintf(stderr, "%s\n", st.ToString().c_str());
    return 1;
  }
  fedge::edge::samples::SampleStore::Options store_opts;
  store_opts.path = absl::StrCat(dir, "/samples.db");
  store_opts.feature_names = train.feature_names;
  store_opts.num_classes = opt.num_classes;
  auto store = fedge::edge::samples::SampleStore::Open(store_opts);
  if (!store.ok()) return 1;
  fedge::edge::serving::HealthTracker health({});
  fedge::edge::serving::LocalSamples local;
  local.store = store->get();
  local.label_names = fedge::data::SyntheticLabels();
  fedge::edge::serving::InferenceService service(rt->get(), &health, &drift, std::move(local));
  auto server = fedge::net::StartGrpcServer(
      {"127.0.0.1:0", {{&service, fedge::v1::Inference::service_full_name()}}});
  EchoService echo;
  auto echo_server = fedge::net::StartGrpcServer(
      {"127.0.0.1:0", {{&echo, fedge::bench::Echo::service_full_name()}}});
  if (!server.ok() || !echo_server.ok()) return 1;

  const int max_clients = *std::max_element(client_counts.begin(), client_counts.end());
  std::vector<std::unique_ptr<fedge::v1::Inference::Stub>> stubs;
  std::vector<std::unique_ptr<fedge::bench::Echo::Stub>> echo_stubs;
  for (int c = 0; c < max_clients; ++c) {
    stubs.push_back(fedge::v1::Inference::NewStub(ClientChannel(server->port, c)));
    echo_stubs.push_back(fedge::bench::Echo::NewStub(ClientChannel(echo_server->port, c)));
  }

  // Requests, built once: rows of the fleet-wide holdout.
  const int64_t width = queries.num_features();
  constexpr int64_t kRequests = 256;
  std::vector<fedge::v1::PredictRequest> singles(kRequests);
  std::vector<fedge::v1::PredictBatchRequest> batches(kRequests);
  for (int64_t i = 0; i < kRequests; ++i) {
    // A stride through the holdout mixes the sites, as the drift reference does.
    auto row = [&](int64_t r, fedge::v1::Instance* out) {
      r = (r * 7919) % queries.size();
      out->mutable_features()->Add(queries.features.begin() + r * width,
                                   queries.features.begin() + (r + 1) * width);
    };
    row(i, singles[i].mutable_instance());
    for (int b = 0; b < batch; ++b) row(i * batch + b, batches[i].add_instances());
  }
  const Call predict = [&](int c, int64_t i) {
    grpc::ClientContext ctx;
    ctx.set_deadline(Deadline());
    fedge::v1::PredictResponse resp;
    return stubs[c]->Predict(&ctx, singles[i % kRequests], &resp).ok();
  };
  const Call predict_batch = [&](int c, int64_t i) {
    grpc::ClientContext ctx;
    ctx.set_deadline(Deadline());
    fedge::v1::PredictBatchResponse resp;
    return stubs[c]->PredictBatch(&ctx, batches[i % kRequests], &resp).ok() &&
           resp.predictions_size() == batch;
  };
  const Call echo_single = [&](int c, int64_t i) {
    grpc::ClientContext ctx;
    ctx.set_deadline(Deadline());
    fedge::v1::PredictRequest resp;
    return echo_stubs[c]->Echo(&ctx, singles[i % kRequests], &resp).ok();
  };
  const Call echo_batch = [&](int c, int64_t i) {
    grpc::ClientContext ctx;
    ctx.set_deadline(Deadline());
    fedge::v1::PredictBatchRequest resp;
    return echo_stubs[c]->EchoBatch(&ctx, batches[i % kRequests], &resp).ok();
  };

  // The fine-tune runs back to back through the training phase's slices.
  auto base = fedge::torchlib::Model::Load(archive);
  if (!base.ok()) return 1;
  fedge::v1::TrainTask task;
  task.set_schema_hash((*base)->schema().Hash());
  task.set_learning_rate(0.01);
  task.set_epochs(1);
  task.set_batch_size(32);
  fedge::edge::runtime::TrainLimits limits;  // fedge-edge's defaults
  limits.threads = 1;
  limits.cpu_share = 0.5;
  limits.nice = 10;
  std::atomic<bool> stop_training{false};
  std::atomic<int64_t> trained{0};
  double training_seconds = 0;
  auto train_loop = [&] {
    const fedge::data::Dataset no_holdout;
    while (!stop_training) {
      auto update = fedge::edge::runtime::Runtime::Train(task, archive, train, no_holdout, limits);
      if (!update.ok()) {
        std::fprintf(stderr, "training failed: %s\n", update.status().ToString().c_str());
        std::exit(1);
      }
      trained += update->num_samples;
    }
  };

  std::vector<Config> configs;
  const std::string modes = absl::GetFlag(FLAGS_modes);
  for (bool training : {false, true}) {
    if (training && !absl::GetFlag(FLAGS_training)) continue;
    for (bool batched : {false, true}) {
      if (!absl::StrContains(modes, batched ? "batch" : "single")) continue;
      for (int clients : client_counts) {
        Config c;
        c.batch = batched;
        c.clients = clients;
        c.training = training;
        configs.push_back(std::move(c));
      }
    }
  }
  {
    Tally warmup;  // connections up, model and code paths warm
    Drive(max_clients, quick ? 0.1 : 0.5, predict, &warmup);
    Drive(max_clients, quick ? 0.1 : 0.5, predict_batch, &warmup);
    Drive(max_clients, quick ? 0.1 : 0.5, echo_single, &warmup);
    Drive(max_clients, quick ? 0.1 : 0.5, echo_batch, &warmup);
  }
  // The handlers alone, called in this thread without gRPC: what the service adds to a call
  // (thread CPU time).
  auto handler_us = [&](bool batched) {
    const int calls = quick ? 200 : 5000;
    const double start = ThreadCpuMicros();
    for (int i = 0; i < calls; ++i) {
      grpc::ServerContext ctx;
      grpc::Status st;
      if (batched) {
        fedge::v1::PredictBatchResponse resp;
        st = service.PredictBatch(&ctx, &batches[i % kRequests], &resp);
      } else {
        fedge::v1::PredictResponse resp;
        st = service.Predict(&ctx, &singles[i % kRequests], &resp);
      }
      if (!st.ok()) std::exit(1);
    }
    return (ThreadCpuMicros() - start) / calls;
  };
  const double single_us = handler_us(false);
  const double batch_us = handler_us(true);
  // The model alone on the same rows.
  auto model_us = [&](int64_t rows) {
    const int calls = quick ? 200 : 5000;
    const double start = ThreadCpuMicros();
    for (int i = 0; i < calls; ++i) {
      const int64_t first = (i * rows) % (queries.size() - rows);
      auto p = (*model)->Predict(
          absl::MakeConstSpan(queries.features).subspan(first * width, rows * width), width);
      if (!p.ok()) std::exit(1);
    }
    return (ThreadCpuMicros() - start) / calls;
  };
  const double model_single_us = model_us(1);
  const double model_batch_us = model_us(batch);
  std::printf(
      "model: mlp hidden=%s, %lld features; PredictBatch of %d rows; serving threads %d; "
      "fine-tune on %lld rows, batch 32, 1 thread, half a core, nice +10; %u cores; "
      "%d rounds of %.1f s slices\n",
      absl::StrJoin(hidden, ",").c_str(), static_cast<long long>(width), batch,
      absl::GetFlag(FLAGS_serving_threads), static_cast<long long>(train_rows),
      std::thread::hardware_concurrency(), rounds, seconds);
  std::printf(
      "handler alone, without gRPC, CPU time: Predict %.1f us, PredictBatch %.1f us per call; "
      "of which the model: %.1f us, %.1f us\n",
      single_us, batch_us, model_single_us, model_batch_us);
  std::fflush(stdout);
  for (int r = 0; r < rounds; ++r) {
    for (bool training : {false, true}) {
      std::thread trainer;
      const auto phase_start = Clock::now();
      if (training) {
        stop_training = false;
        trainer = std::thread(train_loop);
      }
      for (Config& c : configs) {
        if (c.training != training) continue;
        Drive(c.clients, seconds, c.batch ? predict_batch : predict, &c.service);
        Drive(c.clients, seconds, c.batch ? echo_batch : echo_single, &c.echo);
      }
      if (training) {
        stop_training = true;
        trainer.join();
        training_seconds += std::chrono::duration<double>(Clock::now() - phase_start).count();
      }
    }
  }

  std::printf("%-6s %7s %-8s %8s %7s %8s %8s %9s %12s %9s %6s\n", "mode", "clients", "phase",
              "requests", "errors", "p50_ms", "p99_ms", "rps", "echo_p99_ms", "echo_rps", "ratio");
  for (Config& c : configs) {
    const double rps = static_cast<double>(c.service.latencies_ms.size()) / c.service.seconds;
    const double echo_rps = static_cast<double>(c.echo.latencies_ms.size()) / c.echo.seconds;
    std::printf("%-6s %7d %-8s %8zu %7lld %8.3f %8.3f %9.0f %12.3f %9.0f %6.2f\n",
                c.batch ? "batch" : "single", c.clients, c.training ? "training" : "idle",
                c.service.latencies_ms.size(),
                static_cast<long long>(c.service.errors + c.echo.errors),
                Percentile(c.service.latencies_ms, 0.5), Percentile(c.service.latencies_ms, 0.99),
                rps, Percentile(c.echo.latencies_ms, 0.99), echo_rps, rps / echo_rps);
  }
  std::printf("fine-tune during the training phase: %.0f samples/s\n",
              static_cast<double>(trained.load()) / training_seconds);

  int failures = 0;
  for (const Config& c : configs) failures += static_cast<int>(c.service.errors + c.echo.errors);
  fedge::net::StopGrpcServer(&*server, std::chrono::seconds(5));
  fedge::net::StopGrpcServer(&*echo_server, std::chrono::seconds(5));
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  return failures == 0 ? 0 : 1;
}
