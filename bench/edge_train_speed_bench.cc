// Edge fine-tuning speed against PyTorch in Python, in one run. For each built-in architecture
// (the MLP with its default widths, the 1-D conv net with the cloud's default widths) and each
// thread count, the edge's own training path (Runtime::Train: load the base archive, fine-tune
// a copy with SGD, take the delta) runs one epoch per call over synthetic rows; the same
// architecture, batch size, optimizer (SGD, momentum 0.9) and thread count train in Python
// (bench/torch_train_baseline.py, run as a subprocess) on random rows of the same shape. The two
// take turns round after round, so that other load on the machine falls on both alike. Prints
// samples per second and the ratio against each Python loop (DataLoader, manual slicing).
//
//   build/bench/edge_train_speed_bench [--threads=1,2] [--rounds=3] [--epochs=10] [--quick]

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
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
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/app/app.h"
#include "common/data/synthetic.h"
#include "common/tensor/sha256.h"
#include "common/torch/model.h"
#include "edge/runtime/runtime.h"
#include "google/protobuf/util/json_util.h"

#ifndef FEDGE_SOURCE_DIR
#define FEDGE_SOURCE_DIR "."
#endif

ABSL_FLAG(std::string, threads, "1,2", "Intra-op thread counts to compare at.");
ABSL_FLAG(int, rounds, 3, "Rounds; each runs Python, then C++, per architecture and thread count.");
ABSL_FLAG(int, epochs, 10, "Timed epochs per side and round (after one warm-up epoch).");
ABSL_FLAG(int64_t, rows, 4000, "Training rows.");
ABSL_FLAG(int, batch, 32, "Batch size.");
ABSL_FLAG(double, learning_rate, 0.01, "SGD learning rate.");
ABSL_FLAG(int, window, 64, "Time steps per sensor channel for conv1d.");
ABSL_FLAG(std::string, archs, "mlp,conv1d", "Built-in architectures to time.");
ABSL_FLAG(std::string, python, "/usr/bin/python3", "Python with torch.");
ABSL_FLAG(std::string, baseline_script, FEDGE_SOURCE_DIR "/bench/torch_train_baseline.py",
          "The Python baseline.");
ABSL_FLAG(bool, quick, false,
          "A small smoke run (512 rows, one round of one epoch, one thread) that only checks "
          "that both sides run.");

namespace {

struct Arch {
  std::string name;
  fedge::data::SyntheticOptions syn;
  std::vector<int> hidden;
};

struct Sample {
  double cpp = 0;       // samples/s over whole Runtime::Train calls
  double cpp_loop = 0;  // samples/s inside torchlib::Model::Train (its train_seconds)
  double py_dataloader = 0;
  double py_manual = 0;
};

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

// The archive the cloud would register for this architecture: normalization in the module.
std::string Archive(const Arch& arch, const fedge::data::Dataset& data) {
  const auto stats = fedge::data::ComputeStats(data);
  fedge::torchlib::BuiltinOptions opt;
  opt.architecture = arch.name;
  opt.num_features = data.num_features();
  opt.num_classes = static_cast<int64_t>(fedge::data::SyntheticLabels().size());
  opt.hidden = arch.hidden;
  opt.window = arch.syn.window;
  opt.norm_mean = stats.mean;
  opt.norm_std = stats.std;
  opt.seed = 1;
  auto model = fedge::torchlib::Model::Builtin(opt);
  if (!model.ok()) {
    std::fprintf(stderr, "%s\n", model.status().ToString().c_str());
    std::exit(1);
  }
  fedge::v1::ModelContract c;
  for (const auto& f : data.feature_names) c.add_feature_names(f);
  for (const auto& l : fedge::data::SyntheticLabels()) c.add_labels(l);
  c.set_architecture(arch.name);
  c.set_window(arch.syn.window);
  c.mutable_normalization()->mutable_mean()->Add(stats.mean.begin(), stats.mean.end());
  c.mutable_normalization()->mutable_std()->Add(stats.std.begin(), stats.std.end());
  c.mutable_normalization()->set_in_module(true);
  std::string json;
  (void)google::protobuf::util::MessageToJsonString(c, &json);
  (*model)->SetExtraFile(fedge::torchlib::kContractFile, json);
  return *(*model)->Serialize();
}

// One warm-up call, then `epochs` timed calls of Runtime::Train, one epoch each.
void TimeCpp(const std::string& archive, const fedge::data::Dataset& data, int threads, int epochs,
             Sample* out) {
  auto model = fedge::torchlib::Model::Load(archive);
  if (!model.ok()) std::exit(1);
  fedge::v1::TrainTask task;
  task.set_schema_hash((*model)->schema().Hash());
  task.set_optimizer(fedge::v1::SGD);
  task.set_learning_rate(absl::GetFlag(FLAGS_learning_rate));
  task.set_epochs(1);
  task.set_batch_size(absl::GetFlag(FLAGS_batch));
  // The edge's own thread limit; no CPU share or nice, as Python has none.
  fedge::edge::runtime::TrainLimits limits;
  limits.threads = threads;
  const fedge::data::Dataset no_holdout;
  absl::Time start;
  double loop_seconds = 0;
  for (int i = -1; i < epochs; ++i) {
    if (i == 0) start = absl::Now();
    task.set_seed(static_cast<uint64_t>(i + 2));
    auto update = fedge::edge::runtime::Runtime::Train(task, archive, data, no_holdout, limits);
    if (!update.ok()) {
      std::fprintf(stderr, "training failed: %s\n", update.status().ToString().c_str());
      std::exit(1);
    }
    if (i >= 0) loop_seconds += update->metrics["train_seconds"];
  }
  const double samples = static_cast<double>(data.size()) * epochs;
  out->cpp = samples / absl::ToDoubleSeconds(absl::Now() - start);
  out->cpp_loop = samples / loop_seconds;
}

// Runs the Python baseline and reads its one result line.
void TimePython(const Arch& arch, const fedge::data::Dataset& data, int threads, int epochs,
                Sample* out) {
  const std::string cmd = absl::StrCat(
      absl::GetFlag(FLAGS_python), " ", absl::GetFlag(FLAGS_baseline_script), " --arch=", arch.name,
      " --rows=", data.size(), " --features=", data.num_features(),
      " --classes=", fedge::data::SyntheticLabels().size(),
      " --hidden=", absl::StrJoin(arch.hidden, ","), " --window=", arch.syn.window,
      " --batch=", absl::GetFlag(FLAGS_batch), " --lr=", absl::GetFlag(FLAGS_learning_rate),
      " --threads=", threads, " --warmup_epochs=1 --epochs=", epochs);
  FILE* pipe = popen(cmd.c_str(), "r");
  if (pipe == nullptr) {
    std::fprintf(stderr, "cannot run %s\n", cmd.c_str());
    std::exit(1);
  }
  std::string output;
  char buf[512];
  while (std::fgets(buf, sizeof(buf), pipe) != nullptr) output += buf;
  const int rc = pclose(pipe);
  bool dl = false, manual = false;
  for (absl::string_view field :
       absl::StrSplit(output, absl::ByAnyChar(" \n"), absl::SkipEmpty())) {
    std::pair<absl::string_view, absl::string_view> kv = absl::StrSplit(field, '=');
    if (kv.first == "dataloader_samples_per_s")
      dl = absl::SimpleAtod(kv.second, &out->py_dataloader);
    if (kv.first == "manual_samples_per_s") manual = absl::SimpleAtod(kv.second, &out->py_manual);
  }
  if (rc != 0 || !dl || !manual) {
    std::fprintf(stderr, "the Python baseline failed (exit %d): %s\n  output: %s\n", rc,
                 cmd.c_str(), output.c_str());
    std::exit(1);
  }
}

}  // namespace

int main(int argc, char** argv) {
  fedge::app::ParseFlags(
      argc, argv, "edge_train_speed_bench: fedge's edge fine-tuning against PyTorch in Python.");

  const bool quick = absl::GetFlag(FLAGS_quick);
  const int64_t rows = quick ? 512 : absl::GetFlag(FLAGS_rows);
  const int rounds = quick ? 1 : absl::GetFlag(FLAGS_rounds);
  const int epochs = quick ? 1 : absl::GetFlag(FLAGS_epochs);
  std::vector<int> thread_counts;
  for (absl::string_view t : absl::StrSplit(quick ? "1" : absl::GetFlag(FLAGS_threads), ',')) {
    int v = 0;
    if (!absl::SimpleAtoi(t, &v) || v < 1) {
      std::fprintf(stderr, "bad --threads entry '%s'\n", std::string(t).c_str());
      return 2;
    }
    thread_counts.push_back(v);
  }
  if (rounds < 1 || epochs < 1 || rows < 2) {
    std::fprintf(stderr, "--rounds, --epochs and --rows must be positive\n");
    return 2;
  }

  std::vector<Arch> archs;
  for (absl::string_view name : absl::StrSplit(absl::GetFlag(FLAGS_archs), ',')) {
    Arch a;
    a.name = std::string(name);
    if (a.name == "mlp") {
      a.hidden = fedge::torchlib::BuiltinOptions().hidden;
    } else if (a.name == "conv1d") {
      a.syn.window = absl::GetFlag(FLAGS_window);
      a.hidden = {16, 32};  // the cloud's default for conv1d
    } else {
      std::fprintf(stderr, "unknown architecture '%s'\n", a.name.c_str());
      return 2;
    }
    archs.push_back(a);
  }

  std::printf(
      "training set %lld rows, batch %d, SGD lr %g momentum 0.9, %d rounds of %d epochs "
      "per side; %u cores\n",
      static_cast<long long>(rows), absl::GetFlag(FLAGS_batch), absl::GetFlag(FLAGS_learning_rate),
      rounds, epochs, std::thread::hardware_concurrency());
  std::printf("%-7s %-7s %7s %12s %12s %12s %12s %8s %9s\n", "arch", "hidden", "threads",
              "fedge_samp/s", "loop_samp/s", "py_dl_samp/s", "py_man_samp/s", "vs_dl", "vs_manual");
  for (const Arch& arch : archs) {
    const fedge::data::Dataset data = fedge::data::GenerateSite(arch.syn, 0, rows);
    const std::string archive = Archive(arch, data);
    for (int threads : thread_counts) {
      fedge::torchlib::SetNumThreads(threads);
      std::vector<Sample> runs(static_cast<size_t>(rounds));
      std::vector<double> vs_dl, vs_manual;
      for (Sample& s : runs) {
        TimePython(arch, data, threads, epochs, &s);
        TimeCpp(archive, data, threads, epochs, &s);
        vs_dl.push_back(s.cpp / s.py_dataloader);
        vs_manual.push_back(s.cpp / s.py_manual);
      }
      // Rates: total samples over total time (harmonic mean of the rounds). Ratios: the median
      // of the rounds' ratios, each between back-to-back runs.
      auto rate = [&](double Sample::*field) {
        double inverse = 0;
        for (const Sample& s : runs) inverse += 1 / (s.*field);
        return rounds / inverse;
      };
      std::printf("%-7s %-7s %7d %12.0f %12.0f %12.0f %12.0f %8.2f %9.2f\n", arch.name.c_str(),
                  absl::StrJoin(arch.hidden, ",").c_str(), threads, rate(&Sample::cpp),
                  rate(&Sample::cpp_loop), rate(&Sample::py_dataloader), rate(&Sample::py_manual),
                  Median(vs_dl), Median(vs_manual));
      std::fflush(stdout);
    }
  }
  return 0;
}
