// Reproduces the Synthetic-data experiments of Li et al., "Federated Optimization in
// Heterogeneous Networks" (FedProx, MLSys 2020) with fedge's own parts: each edge trains with
// torchlib::Model::Train (what fedge-edge runs, proximal term included) and the cloud folds the
// updates with aggregation::WeightedMean and applies base + mean delta with the
// PlainServerOptimizer (what the coordinator does). Edges run in process.
//
// Setup as in the paper: 30 devices, multinomial logistic regression (one Linear layer 60→10,
// weights starting at zero), plain SGD with lr 0.01, E = 20 local epochs, batch 10, 10 devices
// chosen uniformly per round, 200 rounds. A straggler fraction s makes round(s · 10) of the
// chosen devices stragglers, each running a uniform number of epochs in 1..E−1. Methods:
//   fedavg       μ = 0, the stragglers' updates are dropped
//   fedprox_mu0  μ = 0, the stragglers' partial work is kept
//   fedprox      μ = --mu (1), the stragglers' partial work is kept
// Selection, stragglers and their epochs depend on (seed, round) alone, so the methods of one
// seed see the same devices. Training loss is the global model's cross-entropy over all
// devices' training data (sample-weighted), test accuracy over all devices' test data.
//
//   build/bench/fedprox_synthetic_bench --datasets=1_1 --stragglers=0.9   # the verdict case
//   build/bench/fedprox_synthetic_bench                                   # the whole matrix
//   build/bench/fedprox_synthetic_bench --quick                           # seconds, for ctest

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "bench/upload_bytes.h"
#include "cloud/aggregation/robust.h"
#include "cloud/aggregation/server_optimizer.h"
#include "common/app/app.h"
#include "common/codec/codec.h"
#include "common/codec/error_feedback.h"
#include "common/data/dataset.h"
#include "common/data/fedprox_synthetic.h"
#include "common/status/status.h"
#include "common/torch/model.h"

ABSL_FLAG(std::string, datasets, "iid,0_0,0.5_0.5,1_1",
          "Comma-separated datasets: iid, or alpha_beta for Synthetic(alpha, beta).");
ABSL_FLAG(std::string, stragglers, "0,0.5,0.9", "Comma-separated straggler fractions.");
ABSL_FLAG(std::string, methods, "fedavg,fedprox_mu0,fedprox",
          "Comma-separated methods: fedavg (drops stragglers), fedprox_mu0 (mu 0, keeps partial "
          "work), fedprox (mu --mu, keeps partial work).");
ABSL_FLAG(int, rounds, 200, "Communication rounds.");
ABSL_FLAG(int, seeds, 3, "Runs per configuration, with seeds 1..N.");
ABSL_FLAG(int, devices, 30, "Devices of the dataset.");
ABSL_FLAG(int, clients_per_round, 10, "Devices chosen per round.");
ABSL_FLAG(int, local_epochs, 20, "E: local epochs of a device that is not a straggler.");
ABSL_FLAG(int, batch_size, 10, "Local mini-batch size.");
ABSL_FLAG(double, lr, 0.01, "Local SGD learning rate (no momentum).");
ABSL_FLAG(double, mu, 1.0, "Proximal coefficient of the fedprox method.");
ABSL_FLAG(uint64_t, data_seed, 1, "Seed of the generated datasets (the same for every run).");
ABSL_FLAG(int, report_every, 20, "Rounds between table rows.");
ABSL_FLAG(int, threads, 2,
          "Runs executed at once, one std::thread each; every training uses one LibTorch "
          "thread.");
ABSL_FLAG(std::string, csv, "", "If set, write every run's per-round figures to this file.");
ABSL_FLAG(std::string, encoding, "f32",
          "How the edges encode updates: f32, f16, int8, topk or topk_int8 (top-k with error "
          "feedback, its residuals under --residual_dir).");
ABSL_FLAG(double, topk_fraction, 0.01, "topk, topk_int8: the share of values sent.");
ABSL_FLAG(std::string, residual_dir, "/tmp/fedprox_bench_residuals",
          "Where the devices keep their top-k residuals.");
ABSL_FLAG(bool, quick, false,
          "Smoke run for ctest: Synthetic(1,1), 50% stragglers, 3 rounds, 3 devices a round, "
          "2 local epochs, 1 seed; checks the harness end to end.");

namespace {

namespace agg = fedge::cloud::aggregation;
using fedge::data::Dataset;
using fedge::data::FedProxDevice;
using fedge::torchlib::Model;

constexpr int kFeatures = 60;
constexpr int kClasses = 10;

struct Config {
  std::vector<std::string> datasets;
  std::vector<double> stragglers;
  std::vector<std::string> methods;
  int rounds = 200;
  int seeds = 3;
  int devices = 30;
  int clients_per_round = 10;
  int local_epochs = 20;
  int batch_size = 10;
  double lr = 0.01;
  double mu = 1.0;
  uint64_t data_seed = 1;
  int report_every = 20;
  int threads = 2;
  std::string csv;
  bool quick = false;
  fedge::codec::CodecParams codec;  // how the edges encode their updates
  std::string residual_dir;         // top-k residuals, one file per device and run
};

struct Task {
  std::string name;  // as on the command line
  std::string title;
  std::vector<FedProxDevice> devices;
  Dataset all_train;
  Dataset all_test;
};

// One training run's curve: index r is after round r (0: the initial model).
struct Curve {
  std::vector<double> train_loss;
  std::vector<double> test_accuracy;
  double seconds = 0;
  int64_t upload_bytes = 0;  // serialized UploadRequest messages, all rounds
};

uint64_t Mix(uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

absl::StatusOr<Task> MakeTask(const std::string& name, const Config& config) {
  fedge::data::FedProxSyntheticOptions options;
  options.num_devices = config.devices;
  options.num_features = kFeatures;
  options.num_classes = kClasses;
  options.seed = config.data_seed;
  Task task;
  task.name = name;
  if (name == "iid") {
    options.iid = true;
    task.title = "Synthetic-IID";
  } else {
    std::vector<std::string> parts = absl::StrSplit(name, '_');
    if (parts.size() != 2 || !absl::SimpleAtod(parts[0], &options.alpha) ||
        !absl::SimpleAtod(parts[1], &options.beta)) {
      return absl::InvalidArgumentError(
          absl::StrCat("dataset '", name, "' is neither iid nor alpha_beta (e.g. 0.5_0.5)"));
    }
    task.title = absl::StrCat("Synthetic(", parts[0], ",", parts[1], ")");
  }
  FEDGE_ASSIGN_OR_RETURN(task.devices, fedge::data::GenerateFedProxSynthetic(options));
  task.all_train.feature_names = task.devices[0].train.feature_names;
  task.all_test.feature_names = task.devices[0].test.feature_names;
  for (const FedProxDevice& d : task.devices) {
    FEDGE_RETURN_IF_ERROR(task.all_train.Append(d.train));
    FEDGE_RETURN_IF_ERROR(task.all_test.Append(d.test));
  }
  return task;
}

// Who trains in a round and for how long; the same for every method of a seed.
struct Participant {
  int device = 0;
  int epochs = 0;
  bool straggler = false;
};

std::vector<Participant> ChooseRound(const Config& config, double straggler_fraction, uint64_t seed,
                                     int round) {
  std::mt19937_64 rng(Mix(Mix(seed) ^ static_cast<uint64_t>(round)));
  std::vector<int> ids(static_cast<size_t>(config.devices));
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int>(i);
  std::shuffle(ids.begin(), ids.end(), rng);
  const int n = std::min(config.clients_per_round, config.devices);
  const int stragglers = static_cast<int>(std::lround(straggler_fraction * static_cast<double>(n)));
  // The first `stragglers` of the shuffled choice: a uniform subset of the chosen devices.
  std::uniform_int_distribution<int> epochs(1, std::max(1, config.local_epochs - 1));
  std::vector<Participant> out;
  for (int i = 0; i < n; ++i) {
    Participant p;
    p.device = ids[static_cast<size_t>(i)];
    p.straggler = i < stragglers;
    p.epochs = p.straggler ? epochs(rng) : config.local_epochs;
    out.push_back(p);
  }
  return out;
}

// The models one worker thread owns, loaded from the same archive bytes; reused across runs.
struct Worker {
  std::unique_ptr<Model> local;
  std::unique_ptr<Model> global;
};

absl::StatusOr<Worker> MakeWorker(const std::string& archive) {
  Worker w;
  FEDGE_ASSIGN_OR_RETURN(w.local, Model::Load(archive));
  FEDGE_ASSIGN_OR_RETURN(w.global, Model::Load(archive));
  return w;
}

absl::Status Evaluate(const Task& task, Model& global, Curve* curve) {
  FEDGE_ASSIGN_OR_RETURN(fedge::torchlib::EvalResult train, global.Evaluate(task.all_train));
  FEDGE_ASSIGN_OR_RETURN(fedge::torchlib::EvalResult test, global.Evaluate(task.all_test));
  curve->train_loss.push_back(train.loss);
  curve->test_accuracy.push_back(test.accuracy);
  return absl::OkStatus();
}

// The header an edge sends with an update, with realistic ids, digests and local metrics.
fedge::v1::UpdateHeader TypicalHeader(const Config& config, int round, int device,
                                      const fedge::torchlib::TrainResult& result,
                                      size_t payload_bytes) {
  fedge::v1::UpdateHeader h;
  h.set_job_id("job-20260101-000000-0000");
  h.set_task_id(absl::StrCat(h.job_id(), "-r", round, "-a1-device-", device));
  h.set_round(round);
  h.set_schema_hash(std::string(64, 'a'));
  h.set_encoding(static_cast<fedge::v1::Encoding>(config.codec.encoding));
  h.set_num_samples(result.num_samples);
  h.set_total_size(static_cast<int64_t>(payload_bytes));
  h.set_sha256(std::string(64, 'b'));
  (*h.mutable_metrics())["train_loss"] = result.train_loss;
  (*h.mutable_metrics())["train_seconds"] = result.seconds;
  (*h.mutable_metrics())["epochs"] = result.epochs;
  (*h.mutable_metrics())["local_accuracy"] = 0.5;
  (*h.mutable_metrics())["bytes_down"] = 2500;
  return h;
}

absl::StatusOr<Curve> RunOne(const Config& config, const Task& task, double straggler_fraction,
                             const std::string& method, uint64_t seed, Worker& worker) {
  const auto start = std::chrono::steady_clock::now();
  const bool keep_partial = method != "fedavg";
  const double mu = method == "fedprox" ? config.mu : 0.0;
  const int64_t size = worker.global->schema().NumElements();
  fedge::FlatTensor global(static_cast<size_t>(size), 0.0f);  // the paper starts at zero
  FEDGE_RETURN_IF_ERROR(worker.global->SetFlat(global));
  Curve curve;
  FEDGE_RETURN_IF_ERROR(Evaluate(task, *worker.global, &curve));
  agg::PlainServerOptimizer server;  // lr 1: base + mean delta
  // Each run starts its devices with no residual.
  const std::string residuals = absl::StrCat(config.residual_dir, "/", method, "-", seed, "-",
                                             straggler_fraction, "-", task.name);
  std::filesystem::remove_all(residuals);
  FEDGE_ASSIGN_OR_RETURN(std::unique_ptr<fedge::codec::ErrorFeedback> feedback,
                         fedge::codec::ErrorFeedback::Open({residuals}));
  std::vector<float> delta(static_cast<size_t>(size));
  for (int round = 1; round <= config.rounds; ++round) {
    agg::WeightedMean mean(size);
    for (const Participant& p : ChooseRound(config, straggler_fraction, seed, round)) {
      if (p.straggler && !keep_partial) continue;
      const Dataset& data = task.devices[static_cast<size_t>(p.device)].train;
      FEDGE_RETURN_IF_ERROR(worker.local->SetFlat(global));
      fedge::torchlib::TrainOptions train;
      train.optimizer = "sgd";
      train.momentum = 0;
      train.learning_rate = config.lr;
      train.epochs = p.epochs;
      train.batch_size = config.batch_size;
      train.proximal_mu = mu;
      train.threads = 1;
      train.seed =
          Mix(Mix(Mix(seed) ^ static_cast<uint64_t>(round)) ^ static_cast<uint64_t>(p.device));
      FEDGE_ASSIGN_OR_RETURN(fedge::torchlib::TrainResult result, worker.local->Train(data, train));
      const fedge::FlatTensor local = worker.local->Flat();
      for (size_t i = 0; i < delta.size(); ++i) delta[i] = local[i] - global[i];
      // What the edge sends (top-k through its error feedback) and the coordinator folds.
      std::string payload;
      const uint64_t codec_seed = train.seed ^ 0x5bd1e995ULL;
      if (config.codec.encoding == fedge::codec::Encoding::kTopK ||
          config.codec.encoding == fedge::codec::Encoding::kTopKInt8) {
        FEDGE_ASSIGN_OR_RETURN(payload, feedback->Compress(absl::StrCat("device-", p.device), delta,
                                                           config.codec, codec_seed));
      } else {
        FEDGE_ASSIGN_OR_RETURN(payload, fedge::codec::Encode(delta, config.codec, codec_seed));
      }
      curve.upload_bytes += fedge::bench::UploadWireBytes(
          TypicalHeader(config, round, p.device, result, payload.size()));
      FEDGE_RETURN_IF_ERROR(mean.FoldEncoded(payload, config.codec, result.num_samples));
    }
    if (mean.folded() > 0) {
      FEDGE_ASSIGN_OR_RETURN(std::vector<double> aggregate, mean.Aggregate());
      FEDGE_ASSIGN_OR_RETURN(global, server.Apply(global, aggregate));
      FEDGE_RETURN_IF_ERROR(worker.global->SetFlat(global));
    }  // else every chosen device straggled and was dropped: the model stays
    FEDGE_RETURN_IF_ERROR(Evaluate(task, *worker.global, &curve));
  }
  curve.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return curve;
}

std::string MethodLabel(const std::string& method, double mu) {
  if (method == "fedavg") return "FedAvg (drop)";
  if (method == "fedprox_mu0") return "FedProx mu=0";
  return absl::StrFormat("FedProx mu=%g", mu);
}

double MeanOver(const std::vector<Curve>& runs, bool loss, size_t r) {
  double s = 0;
  for (const Curve& c : runs) s += loss ? c.train_loss[r] : c.test_accuracy[r];
  return s / static_cast<double>(runs.size());
}

// curves[m][s]: method m, seed s.
void PrintTable(const Config& config, const Task& task, double fraction,
                const std::vector<std::vector<Curve>>& curves) {
  std::printf("\n%s, %g%% stragglers: training loss / test accuracy %%, mean over %d seed%s\n",
              task.title.c_str(), fraction * 100, config.seeds, config.seeds == 1 ? "" : "s");
  std::printf("| round |");
  for (const std::string& m : config.methods) {
    std::printf(" %s |", MethodLabel(m, config.mu).c_str());
  }
  std::printf("\n|------:|");
  for (size_t i = 0; i < config.methods.size(); ++i) std::printf("-------------:|");
  std::printf("\n");
  for (int r = 0; r <= config.rounds; ++r) {
    if (r % config.report_every != 0 && r != config.rounds) continue;
    std::printf("| %5d |", r);
    for (size_t m = 0; m < config.methods.size(); ++m) {
      std::printf(" %6.3f / %5.1f |", MeanOver(curves[m], true, static_cast<size_t>(r)),
                  100 * MeanOver(curves[m], false, static_cast<size_t>(r)));
    }
    std::printf("\n");
  }
  std::printf("| mean acc, all rounds |");
  for (size_t m = 0; m < config.methods.size(); ++m) {
    double s = 0;
    for (const Curve& c : curves[m]) {
      for (double a : c.test_accuracy) s += a;
    }
    std::printf(
        " %5.1f |",
        100 * s / static_cast<double>(curves[m].size() * curves[m][0].test_accuracy.size()));
  }
  std::printf("\n| upload KB a round |");
  for (size_t m = 0; m < config.methods.size(); ++m) {
    double bytes = 0;
    for (const Curve& c : curves[m]) bytes += static_cast<double>(c.upload_bytes);
    std::printf(" %8.1f |", bytes / static_cast<double>(curves[m].size() * config.rounds) / 1e3);
  }
  double seconds = 0;
  for (const auto& runs : curves) {
    for (const Curve& c : runs) seconds += c.seconds;
  }
  std::printf("\n(%.0f s of training and evaluation over %zu runs)\n", seconds,
              curves.size() * curves[0].size());
  std::fflush(stdout);
}

// Rounds t >= after with loss[t + 1] > 1.1 · loss[t].
int Rises(const std::vector<double>& loss, int after) {
  int n = 0;
  for (size_t t = static_cast<size_t>(after); t + 1 < loss.size(); ++t) {
    if (loss[t + 1] > 1.1 * loss[t]) ++n;
  }
  return n;
}

void PrintVerdict(const Config& config, const std::vector<Curve>& fedavg,
                  const std::vector<Curve>& fedprox) {
  const size_t last = static_cast<size_t>(config.rounds);
  std::printf(
      "\nVerdict, Synthetic(1,1) with 90%% stragglers, FedProx mu=%g (partial work kept) "
      "against FedAvg (stragglers dropped), %d seeds:\n",
      config.mu, config.seeds);
  bool c1 = true;
  std::string finals;
  for (size_t s = 0; s < fedavg.size(); ++s) {
    const double p = fedprox[s].test_accuracy[last], a = fedavg[s].test_accuracy[last];
    c1 = c1 && p > a;
    absl::StrAppendFormat(&finals, "%sseed %d: %.1f vs %.1f", s ? "; " : "", s + 1, 100 * p,
                          100 * a);
  }
  std::printf("(1) %s: final test accuracy higher in every seed (%s)\n", c1 ? "PASS" : "FAIL",
              finals.c_str());
  double sp = 0, sa = 0, count = 0;
  for (size_t s = 0; s < fedavg.size(); ++s) {
    for (size_t r = 0; r <= last; ++r) {
      sp += fedprox[s].test_accuracy[r];
      sa += fedavg[s].test_accuracy[r];
      ++count;
    }
  }
  const double gap = 100 * (sp - sa) / count;
  std::printf(
      "(2) %s: test accuracy averaged over rounds 0..%d and all seeds is %.1f vs %.1f, "
      "%+.1f points (need >= +8)\n",
      gap >= 8 ? "PASS" : "FAIL", config.rounds, 100 * sp / count, 100 * sa / count, gap);
  const int after = std::min(20, config.rounds);
  int prox_rises = 0, avg_rises = 0, avg_seeds_rising = 0;
  std::string per_seed;
  for (size_t s = 0; s < fedavg.size(); ++s) {
    const int p = Rises(fedprox[s].train_loss, after), a = Rises(fedavg[s].train_loss, after);
    prox_rises += p;
    avg_rises += a;
    if (a > 0) ++avg_seeds_rising;
    absl::StrAppendFormat(&per_seed, "%sseed %d: %d vs %d", s ? "; " : "", s + 1, p, a);
  }
  std::vector<double> mean_avg;
  for (size_t r = 0; r <= last; ++r) mean_avg.push_back(MeanOver(fedavg, true, r));
  const bool c3 = prox_rises == 0 && avg_seeds_rising > 0;
  std::printf(
      "(3) %s: after round %d FedProx's training loss never rises > 10%% from one round "
      "to the next in any seed, while FedAvg's does in at least one seed (rises, FedProx "
      "vs FedAvg: %s; FedAvg's seed-mean curve rises %d times)\n",
      c3 ? "PASS" : "FAIL", after, per_seed.c_str(), Rises(mean_avg, after));
  std::fflush(stdout);
}

absl::StatusOr<std::vector<double>> ParseFractions(const std::string& text) {
  std::vector<double> out;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipEmpty())) {
    double f;
    if (!absl::SimpleAtod(part, &f) || f < 0 || f > 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("straggler fraction '", part, "' is not a number in [0, 1]"));
    }
    out.push_back(f);
  }
  return out;
}

absl::StatusOr<Config> ReadFlags() {
  Config c;
  c.quick = absl::GetFlag(FLAGS_quick);
  c.datasets = absl::StrSplit(absl::GetFlag(FLAGS_datasets), ',', absl::SkipEmpty());
  FEDGE_ASSIGN_OR_RETURN(c.stragglers, ParseFractions(absl::GetFlag(FLAGS_stragglers)));
  c.methods = absl::StrSplit(absl::GetFlag(FLAGS_methods), ',', absl::SkipEmpty());
  c.rounds = absl::GetFlag(FLAGS_rounds);
  c.seeds = absl::GetFlag(FLAGS_seeds);
  c.devices = absl::GetFlag(FLAGS_devices);
  c.clients_per_round = absl::GetFlag(FLAGS_clients_per_round);
  c.local_epochs = absl::GetFlag(FLAGS_local_epochs);
  c.batch_size = absl::GetFlag(FLAGS_batch_size);
  c.lr = absl::GetFlag(FLAGS_lr);
  c.mu = absl::GetFlag(FLAGS_mu);
  c.data_seed = absl::GetFlag(FLAGS_data_seed);
  c.report_every = absl::GetFlag(FLAGS_report_every);
  c.threads = absl::GetFlag(FLAGS_threads);
  c.csv = absl::GetFlag(FLAGS_csv);
  auto encoding = fedge::codec::ParseEncoding(absl::GetFlag(FLAGS_encoding));
  if (!encoding.ok()) {
    std::fprintf(stderr, "fedprox_synthetic_bench: --encoding: %s\n",
                 std::string(encoding.status().message()).c_str());
    std::exit(2);
  }
  c.codec.encoding = *encoding;
  c.codec.topk_fraction = absl::GetFlag(FLAGS_topk_fraction);
  c.residual_dir = absl::GetFlag(FLAGS_residual_dir);
  if (c.quick) {
    c.datasets = {"1_1"};
    c.stragglers = {0.5};  // of 3 devices, 2 straggle: FedAvg still aggregates one a round
    c.rounds = 3;
    c.seeds = 1;
    c.clients_per_round = 3;
    c.local_epochs = 2;
    c.report_every = 1;
  }
  for (const std::string& m : c.methods) {
    if (m != "fedavg" && m != "fedprox_mu0" && m != "fedprox") {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown method '", m, "' (want fedavg, fedprox_mu0 or fedprox)"));
    }
  }
  if (c.datasets.empty() || c.stragglers.empty() || c.methods.empty()) {
    return absl::InvalidArgumentError("--datasets, --stragglers and --methods must not be empty");
  }
  if (c.rounds < 1 || c.seeds < 1 || c.devices < 1 || c.clients_per_round < 1 ||
      c.local_epochs < 1 || c.batch_size < 1 || c.report_every < 1 || c.threads < 1) {
    return absl::InvalidArgumentError(
        "--rounds, --seeds, --devices, --clients_per_round, --local_epochs, --batch_size, "
        "--report_every and --threads must be at least 1");
  }
  if (!(c.lr > 0) || !(c.mu >= 0)) {
    return absl::InvalidArgumentError("--lr must be positive and --mu non-negative");
  }
  return c;
}

absl::Status Run(const Config& config) {
  fedge::torchlib::SetNumThreads(1);
  fedge::torchlib::BuiltinOptions builtin;
  builtin.architecture = "mlp";
  builtin.hidden = {};  // no hidden layer: multinomial logistic regression
  builtin.num_features = kFeatures;
  builtin.num_classes = kClasses;
  FEDGE_ASSIGN_OR_RETURN(std::unique_ptr<Model> model, Model::Builtin(builtin));
  FEDGE_ASSIGN_OR_RETURN(std::string archive, model->Serialize());
  std::vector<Worker> workers;
  for (int i = 0; i < config.threads; ++i) {
    FEDGE_ASSIGN_OR_RETURN(Worker w, MakeWorker(archive));
    workers.push_back(std::move(w));
  }
  std::printf(
      "FedProx Synthetic: %d devices, %d features, %d classes; logistic regression "
      "(%lld parameters, zero start); SGD lr %g, batch %d, E = %d, %d devices a round, "
      "%d rounds, seeds 1..%d, data seed %llu; %d runs at once, 1 LibTorch thread each\n",
      config.devices, kFeatures, kClasses, static_cast<long long>(model->schema().NumElements()),
      config.lr, config.batch_size, config.local_epochs, config.clients_per_round, config.rounds,
      config.seeds, static_cast<unsigned long long>(config.data_seed), config.threads);
  std::ofstream csv;
  if (!config.csv.empty()) {
    csv.open(config.csv);
    if (!csv) return absl::InvalidArgumentError(absl::StrCat("cannot write ", config.csv));
    csv << "dataset,stragglers,method,seed,round,train_loss,test_accuracy\n";
  }

  for (const std::string& name : config.datasets) {
    FEDGE_ASSIGN_OR_RETURN(Task task, MakeTask(name, config));
    int64_t smallest = INT64_MAX, largest = 0;
    for (const FedProxDevice& d : task.devices) {
      const int64_t n = d.train.size() + d.test.size();
      smallest = std::min(smallest, n);
      largest = std::max(largest, n);
    }
    std::printf("\n%s: %lld training and %lld test samples; %lld to %lld samples a device\n",
                task.title.c_str(), static_cast<long long>(task.all_train.size()),
                static_cast<long long>(task.all_test.size()), static_cast<long long>(smallest),
                static_cast<long long>(largest));
    for (double fraction : config.stragglers) {
      // Every (method, seed) run of this configuration, the costliest first so the threads
      // finish together: FedAvg with stragglers trains the fewest devices.
      struct Job {
        size_t method;
        int seed;
      };
      std::vector<Job> jobs;
      for (size_t m = 0; m < config.methods.size(); ++m) {
        for (int s = 1; s <= config.seeds; ++s) jobs.push_back({m, s});
      }
      std::stable_sort(jobs.begin(), jobs.end(), [&](const Job& a, const Job& b) {
        return (config.methods[a.method] != "fedavg") > (config.methods[b.method] != "fedavg");
      });
      std::vector<std::vector<Curve>> curves(config.methods.size(),
                                             std::vector<Curve>(config.seeds));
      std::atomic<size_t> next{0};
      std::mutex mu;
      absl::Status failure;
      std::vector<std::thread> threads;
      for (Worker& worker : workers) {
        threads.emplace_back([&, w = &worker] {
          for (size_t j = next++; j < jobs.size(); j = next++) {
            const Job& job = jobs[j];
            absl::StatusOr<Curve> c = RunOne(config, task, fraction, config.methods[job.method],
                                             static_cast<uint64_t>(job.seed), *w);
            std::lock_guard<std::mutex> lock(mu);
            if (!c.ok()) {
              if (failure.ok()) {
                failure = absl::Status(c.status().code(),
                                       absl::StrCat(task.title, ", stragglers ", fraction, ", ",
                                                    config.methods[job.method], ", seed ", job.seed,
                                                    ": ", c.status().message()));
              }
              continue;
            }
            std::fprintf(stderr, "%s stragglers %g %s seed %d: %.1f s, final loss %.3f acc %.3f\n",
                         task.title.c_str(), fraction, config.methods[job.method].c_str(), job.seed,
                         c->seconds, c->train_loss.back(), c->test_accuracy.back());
            curves[job.method][static_cast<size_t>(job.seed - 1)] = *std::move(c);
          }
        });
      }
      for (std::thread& t : threads) t.join();
      FEDGE_RETURN_IF_ERROR(failure);

      // The zero model scores every class alike: its loss is ln(10) on any data.
      for (const auto& runs : curves) {
        for (const Curve& c : runs) {
          if (std::abs(c.train_loss[0] - std::log(static_cast<double>(kClasses))) > 1e-4) {
            return absl::InternalError(absl::StrCat("the initial model's training loss is ",
                                                    c.train_loss[0], ", not ln(10)"));
          }
          for (size_t r = 0; r < c.train_loss.size(); ++r) {
            if (!std::isfinite(c.train_loss[r]) || c.test_accuracy[r] < 0 ||
                c.test_accuracy[r] > 1) {
              return absl::InternalError(absl::StrCat("round ", r, ": training loss ",
                                                      c.train_loss[r], ", test accuracy ",
                                                      c.test_accuracy[r]));
            }
          }
        }
      }
      if (config.quick) {
        // Every method aggregated something: its model left the zero start.
        for (size_t m = 0; m < curves.size(); ++m) {
          if (curves[m][0].train_loss.back() == curves[m][0].train_loss[0]) {
            return absl::InternalError(absl::StrCat(config.methods[m], "'s model never changed in ",
                                                    config.rounds, " rounds"));
          }
        }
      }
      PrintTable(config, task, fraction, curves);
      if (csv.is_open()) {
        for (size_t m = 0; m < curves.size(); ++m) {
          for (size_t s = 0; s < curves[m].size(); ++s) {
            const Curve& c = curves[m][s];
            for (size_t r = 0; r < c.train_loss.size(); ++r) {
              csv << name << ',' << fraction << ',' << config.methods[m] << ',' << s + 1 << ',' << r
                  << ',' << c.train_loss[r] << ',' << c.test_accuracy[r] << '\n';
            }
          }
        }
        csv.flush();
      }
      const auto fedavg = std::find(config.methods.begin(), config.methods.end(), "fedavg");
      const auto fedprox = std::find(config.methods.begin(), config.methods.end(), "fedprox");
      if (!config.quick && name == "1_1" && std::abs(fraction - 0.9) < 1e-9 &&
          fedavg != config.methods.end() && fedprox != config.methods.end()) {
        PrintVerdict(config, curves[static_cast<size_t>(fedavg - config.methods.begin())],
                     curves[static_cast<size_t>(fedprox - config.methods.begin())]);
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

int main(int argc, char** argv) {
  fedge::app::ParseFlags(argc, argv,
                         "FedAvg and FedProx on the FedProx paper's Synthetic data, with "
                         "fedge's edge training and cloud aggregation.");
  absl::StatusOr<Config> config = ReadFlags();
  if (!config.ok()) {
    std::cerr << "fedprox_synthetic_bench: " << config.status().message() << "\n";
    return 2;
  }
  if (absl::Status s = Run(*config); !s.ok()) {
    std::cerr << "fedprox_synthetic_bench: " << s << "\n";
    return 1;
  }
  return 0;
}
