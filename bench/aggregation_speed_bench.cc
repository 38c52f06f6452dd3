// How fast the coordinator folds updates, per aggregation rule, in GB/s of F32 update bytes,
// against a plain axpy loop over the same bytes measured in the same run, and against the same
// fold written the way Python FL frameworks write it (bench/numpy_fold.py).
//
// Each update starts as the server receives it: F32 bytes in the edge's 1 MiB wire chunks. The
// timed work per update is what UploadUpdate and JobManager::SubmitUpdate do to it: stage the
// chunks into one payload, inspect it (decode, finite check and L2 norm in one streaming pass),
// check the norm bound, then FoldEncoded into the rule's aggregator. Aggregate() is timed apart.
// The baseline is acc[i] += w * x[i] (double acc, float x) straight over the chunks. Every cell
// runs in its own child process, which reports its peak resident memory.
//
// To keep memory sane, updates cycle through a small pool of distinct payloads (update i is
// payload i % pool) instead of holding one payload per update.
//
//   build/bench/aggregation_speed_bench [--params=1e5,1e6,1e7] [--updates=10,100,1000]
//     [--pool=4] [--min_seconds=0.5] [--quick]

#include <malloc.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "cloud/aggregation/robust.h"
#include "common/app/app.h"
#include "common/codec/codec.h"
#include "common/tensor/flat.h"

ABSL_FLAG(std::string, params, "1e5,1e6,1e7", "Parameter counts, comma-separated.");
ABSL_FLAG(std::string, updates, "10,100,1000", "Updates per round, comma-separated.");
ABSL_FLAG(std::string, strategies, "fedavg,median,trimmed_mean,krum,multi_krum,clip(fedavg)",
          "Aggregation rules to time, comma-separated.");
ABSL_FLAG(int, pool, 4, "Distinct update payloads, cycled through.");
ABSL_FLAG(double, min_seconds, 0.5, "A cell repeats its fold until this much time has passed.");
ABSL_FLAG(double, max_kept, 1e9,
          "Rules that keep every update, and numpy, skip cells of more updates × parameters.");
ABSL_FLAG(double, max_krum_work, 1e10,
          "Krum's Aggregate() (n²/2 distances × parameters) is skipped above this.");
ABSL_FLAG(double, max_update_norm, 1e6, "The norm bound checked before the fold (cloud default).");
ABSL_FLAG(std::string, python, "/usr/bin/python3", "Python with numpy; empty skips numpy.");
ABSL_FLAG(std::string, numpy_script, FEDGE_BENCH_DIR "/numpy_fold.py", "The numpy fold.");
ABSL_FLAG(int, layers, 4, "Layers the numpy fold splits the parameters into.");
ABSL_FLAG(bool, breakdown, false,
          "Also time each step of the fedavg path (stage, decode, finite, norm, fold) apart.");
ABSL_FLAG(bool, quick, false, "A few-second smoke run on small sizes (for ctest).");

namespace {

namespace agg = fedge::cloud::aggregation;
using Clock = std::chrono::steady_clock;

constexpr size_t kChunkBytes = 1 << 20;  // the edge's UploadUpdate chunk (edge/agent/agent.cc)

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// A field of /proc/self/status ("VmRSS", "VmHWM"), in bytes.
long StatusBytes(const char* field) {
  FILE* f = std::fopen("/proc/self/status", "r");
  if (f == nullptr) return 0;
  char line[256];
  long kb = 0;
  const size_t n = std::strlen(field);
  while (std::fgets(line, sizeof(line), f) != nullptr) {
    if (std::strncmp(line, field, n) == 0 && line[n] == ':') {
      kb = std::atol(line + n + 1);
      break;
    }
  }
  std::fclose(f);
  return kb * 1024;
}

// Resets VmHWM to the current resident size (Linux >= 4.0).
void ResetPeak() {
  FILE* f = std::fopen("/proc/self/clear_refs", "w");
  if (f == nullptr) return;
  std::fputs("5", f);
  std::fclose(f);
}

// One update as it arrives: F32 bytes in wire chunks.
struct WireUpdate {
  std::vector<std::string> chunks;
  size_t total_bytes = 0;
};

// Pool entry k holds uniform values in ±1e-3·(1 + k), so their norms differ.
std::vector<WireUpdate> MakePool(int pool, int64_t params) {
  std::vector<WireUpdate> out;
  uint64_t state = 0x9E3779B97F4A7C15ull;
  for (int k = 0; k < pool; ++k) {
    std::vector<float> values(static_cast<size_t>(params));
    const float scale = 1e-3f * static_cast<float>(1 + k);
    for (float& v : values) {
      state ^= state << 13;
      state ^= state >> 7;
      state ^= state << 17;
      v = scale * (static_cast<float>(state >> 40) / static_cast<float>(1 << 23) - 1.0f);
    }
    const std::string payload = fedge::EncodeF32(values);
    WireUpdate u;
    u.total_bytes = payload.size();
    for (size_t off = 0; off < payload.size(); off += kChunkBytes) {
      u.chunks.push_back(payload.substr(off, kChunkBytes));
    }
    out.push_back(std::move(u));
  }
  return out;
}

int64_t SamplesOf(int i) { return 100 + i % 7; }

absl::StatusOr<std::unique_ptr<agg::RoundAggregator>> MakeRule(const std::string& name,
                                                               int64_t params, int updates,
                                                               double clip_norm) {
  agg::RuleParams p;
  p.byzantine = updates / 5;
  if (name == "multi_krum") p.multi_krum = updates - p.byzantine;
  if (name == "clip(fedavg)") {
    p.clip_norm = clip_norm;
    return agg::MakeRoundAggregator("fedavg", params, p);
  }
  return agg::MakeRoundAggregator(name, params, p);
}

// What one cell measured, sent from the child to the parent.
constexpr int kSteps = 3;

struct CellResult {
  int ok = 0;
  int reps = 0;
  double fold_seconds = 0;        // per rep
  double aggregate_seconds = -1;  // -1: not run
  long fold_peak_bytes = 0;       // peak resident growth during the folds and Aggregate
  long peak_bytes = 0;            // the child's peak resident size
  // With --breakdown, for fedavg: seconds per rep in each step of FoldOne.
  double step_seconds[3] = {0, 0, 0};
  char error[200] = {0};
};

constexpr const char* kStepNames[kSteps] = {"stage", "inspect", "fold"};

// The server's path for one update (UploadUpdate, then JobManager::SubmitUpdate): stage the
// chunks, codec::Inspect (decode, finite check and L2 norm in one streaming pass), the norm
// bound, then FoldEncoded, which decodes block by block into the rule's aggregate.
// `steps`, if not null, accumulates the time of each step.
absl::Status FoldOne(const WireUpdate& u, int64_t params, int64_t samples, double bound,
                     agg::RoundAggregator* rule, double* steps) {
  auto t0 = Clock::now();
  auto lap = [&](int step) {
    if (steps == nullptr) return;
    const auto t = Clock::now();
    steps[step] += Seconds(t0, t);
    t0 = t;
  };
  std::string payload;
  payload.reserve(u.total_bytes);
  for (const std::string& c : u.chunks) payload.append(c);
  lap(0);
  const fedge::codec::CodecParams f32;
  auto stats = fedge::codec::Inspect(payload, f32, params);
  if (!stats.ok()) return stats.status();
  if (!stats->all_finite) return absl::InvalidArgumentError("non-finite value");
  if (stats->l2_norm > bound) return absl::InvalidArgumentError("norm bound");
  lap(1);
  absl::Status st = rule->FoldEncoded(payload, f32, samples);
  lap(2);
  return st;
}

// The baseline: acc[i] += w * x[i] over the chunks as they arrived.
void AxpyOne(const WireUpdate& u, double w, std::vector<double>* acc) {
  double* a = acc->data();
  for (const std::string& c : u.chunks) {
    const size_t n = c.size() / sizeof(float);
    const char* x = c.data();
    for (size_t i = 0; i < n; ++i) {
      float v;
      std::memcpy(&v, x + i * sizeof(float), sizeof(float));
      a[i] += w * v;
    }
    a += n;
  }
}

CellResult RunCell(const std::string& strategy, int64_t params, int updates, int pool_size,
                   double min_seconds, bool aggregate) {
  CellResult r;
  const std::vector<WireUpdate> pool = MakePool(std::min(pool_size, updates), params);
  // Clip to the median pool norm, so about half the updates are scaled down.
  std::vector<double> norms;
  for (const WireUpdate& u : pool) {
    double squares = 0;
    for (const std::string& c : u.chunks) {
      const double norm = fedge::L2Norm(*fedge::DecodeF32(c, c.size() / sizeof(float)));
      squares += norm * norm;
    }
    norms.push_back(std::sqrt(squares));
  }
  std::sort(norms.begin(), norms.end());
  const double clip_norm = norms[norms.size() / 2];
  const double bound = absl::GetFlag(FLAGS_max_update_norm);

  malloc_trim(0);  // return what building the pool freed, so the peak below is the fold's
  ResetPeak();
  const long before = StatusBytes("VmRSS");
  double total = 0;
  while (r.reps == 0 || total < min_seconds) {
    if (strategy == "axpy") {
      const auto start = Clock::now();
      std::vector<double> acc(static_cast<size_t>(params), 0.0);
      for (int i = 0; i < updates; ++i) {
        AxpyOne(pool[static_cast<size_t>(i) % pool.size()], static_cast<double>(SamplesOf(i)),
                &acc);
      }
      total += Seconds(start, Clock::now());
      // Keep the sum observable so the loop is not optimised away.
      if (acc[static_cast<size_t>(params) / 2] == 12345.0) std::printf(" ");
    } else {
      double* steps = strategy == "fedavg" ? r.step_seconds : nullptr;
      auto rule = MakeRule(strategy, params, updates, clip_norm);
      if (!rule.ok()) {
        std::snprintf(r.error, sizeof(r.error), "%s", rule.status().ToString().c_str());
        return r;
      }
      const auto start = Clock::now();
      for (int i = 0; i < updates; ++i) {
        absl::Status st = FoldOne(pool[static_cast<size_t>(i) % pool.size()], params, SamplesOf(i),
                                  bound, rule->get(), steps);
        if (!st.ok()) {
          std::snprintf(r.error, sizeof(r.error), "%s", st.ToString().c_str());
          return r;
        }
      }
      total += Seconds(start, Clock::now());
      if (aggregate) {
        const auto agg_start = Clock::now();
        auto out = (*rule)->Aggregate();
        r.aggregate_seconds = Seconds(agg_start, Clock::now());
        if (!out.ok()) {
          std::snprintf(r.error, sizeof(r.error), "%s", out.status().ToString().c_str());
          return r;
        }
        aggregate = false;  // once per cell
      }
    }
    ++r.reps;
  }
  r.fold_seconds = total / r.reps;
  for (double& t : r.step_seconds) t /= r.reps;
  r.peak_bytes = StatusBytes("VmHWM");
  r.fold_peak_bytes = r.peak_bytes - before;
  r.ok = 1;
  return r;
}

CellResult RunCellInChild(const std::string& strategy, int64_t params, int updates, int pool,
                          double min_seconds, bool aggregate) {
  CellResult r;
  int fds[2];
  if (pipe(fds) != 0) return r;
  std::fflush(stdout);
  const pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    const CellResult mine = RunCell(strategy, params, updates, pool, min_seconds, aggregate);
    const bool sent = write(fds[1], &mine, sizeof(mine)) == sizeof(mine);
    _exit(sent ? 0 : 1);
  }
  close(fds[1]);
  if (read(fds[0], &r, sizeof(r)) != sizeof(r)) {
    r = CellResult();
    std::snprintf(r.error, sizeof(r.error), "the child died (out of memory?)");
  }
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  return r;
}

struct NumpyResult {
  bool ok = false;
  double gbps = 0;
  double fold_peak_mb = 0;
  double maxrss_mb = 0;
  std::string error;
};

NumpyResult RunNumpy(int64_t params, int updates, int pool, double min_seconds) {
  NumpyResult r;
  const std::string cmd = absl::StrCat(
      absl::GetFlag(FLAGS_python), " ", absl::GetFlag(FLAGS_numpy_script), " --params=", params,
      " --updates=", updates, " --pool=", pool, " --layers=", absl::GetFlag(FLAGS_layers),
      " --min_seconds=", min_seconds, " 2>&1");
  std::fflush(stdout);
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) {
    r.error = "cannot start python";
    return r;
  }
  std::string out;
  char buf[512];
  while (std::fgets(buf, sizeof(buf), p) != nullptr) out += buf;
  const int status = pclose(p);
  std::map<std::string, std::string> kv;
  for (absl::string_view word : absl::StrSplit(out, absl::ByAnyChar(" \n"), absl::SkipEmpty())) {
    std::pair<std::string, std::string> pair = absl::StrSplit(word, absl::MaxSplits('=', 1));
    kv[pair.first] = pair.second;
  }
  if (status != 0 || !absl::SimpleAtod(kv["gbps"], &r.gbps) ||
      !absl::SimpleAtod(kv["fold_peak_mb"], &r.fold_peak_mb) ||
      !absl::SimpleAtod(kv["maxrss_mb"], &r.maxrss_mb)) {
    r.error = out.empty() ? "no output" : out.substr(0, 200);
    return r;
  }
  r.ok = true;
  return r;
}

bool ParseCounts(const std::vector<std::string>& words, std::vector<int64_t>* out) {
  for (const std::string& w : words) {
    double v = 0;
    if (!absl::SimpleAtod(w, &v) || v < 1 || v > 1e12) return false;
    out->push_back(static_cast<int64_t>(std::llround(v)));
  }
  return !out->empty();
}

}  // namespace

int main(int argc, char** argv) {
  fedge::app::ParseFlags(
      argc, argv,
      "aggregation_speed_bench: GB/s of F32 update bytes folded per aggregation rule, against an "
      "axpy loop and a numpy fold measured in the same run.");

  std::vector<int64_t> params_list, updates_list;
  std::vector<std::string> params_flag = absl::StrSplit(absl::GetFlag(FLAGS_params), ',');
  std::vector<std::string> updates_flag = absl::StrSplit(absl::GetFlag(FLAGS_updates), ',');
  double min_seconds = absl::GetFlag(FLAGS_min_seconds);
  int pool = absl::GetFlag(FLAGS_pool);
  if (absl::GetFlag(FLAGS_quick)) {
    params_flag = {"1e4", "3e5"};
    updates_flag = {"4", "12"};
    min_seconds = 0.02;
    pool = 2;
  }
  if (!ParseCounts(params_flag, &params_list) || !ParseCounts(updates_flag, &updates_list) ||
      pool < 1) {
    std::fprintf(stderr, "--params and --updates take positive counts, --pool at least 1\n");
    return 2;
  }
  const std::vector<std::string> strategies =
      absl::StrSplit(absl::GetFlag(FLAGS_strategies), ',', absl::SkipEmpty());
  const double max_kept = absl::GetFlag(FLAGS_max_kept);
  const double max_krum = absl::GetFlag(FLAGS_max_krum_work);

  std::printf(
      "updates: F32 in %zu-byte wire chunks; a pool of %d distinct payloads, cycled through "
      "(update i is payload i %% %d)\n",
      kChunkBytes, pool, pool);
  std::printf(
      "timed per update: stage chunks + Inspect (decode, finite, norm) + norm bound + FoldEncoded; "
      "GB/s = update bytes / that time; agg_s = one Aggregate()\n");
  std::printf("baseline axpy: acc[i] += w * x[i] (double acc, float x) over the same chunks\n");
  std::printf("peak_MB: the cell's peak resident growth over its payload pool (own process)\n\n");
  std::printf("%10s %8s %-14s %8s %8s %9s %9s\n", "params", "updates", "strategy", "GB/s",
              "vs_axpy", "agg_s", "peak_MB");

  struct Key {
    int64_t params;
    int64_t updates;
    bool operator<(const Key& o) const {
      return params != o.params ? params < o.params : updates < o.updates;
    }
  };
  std::map<Key, double> fedavg_gbps;
  std::map<Key, double> fedavg_peak_mb;
  std::map<Key, double> fedavg_fold_gbps;  // the Fold step alone
  bool failed = false;
  double worst_fedavg_ratio = 1e9;

  for (int64_t params : params_list) {
    for (int64_t n64 : updates_list) {
      const int updates = static_cast<int>(n64);
      const double bytes = static_cast<double>(params) * updates * 4;
      const CellResult base = RunCellInChild("axpy", params, updates, pool, min_seconds, false);
      if (!base.ok) {
        std::printf("%10" PRId64 " %8d %-14s failed: %s\n", params, updates, "axpy", base.error);
        failed = true;
        continue;
      }
      const double base_gbps = bytes / base.fold_seconds / 1e9;
      std::printf("%10" PRId64 " %8d %-14s %8.2f %8.2f %9s %9.1f\n", params, updates, "axpy",
                  base_gbps, 1.0, "-", base.fold_peak_bytes / 1e6);
      for (const std::string& s : strategies) {
        const bool keeps = s != "fedavg" && s != "clip(fedavg)";
        if (keeps && static_cast<double>(params) * updates > max_kept) {
          std::printf("%10" PRId64 " %8d %-14s skipped (updates x params > %.0e)\n", params,
                      updates, s.c_str(), max_kept);
          continue;
        }
        const bool krum = s == "krum" || s == "multi_krum";
        const bool aggregate =
            !krum || 0.5 * updates * updates * static_cast<double>(params) <= max_krum;
        const CellResult c = RunCellInChild(s, params, updates, pool, min_seconds, aggregate);
        if (!c.ok) {
          std::printf("%10" PRId64 " %8d %-14s failed: %s\n", params, updates, s.c_str(), c.error);
          failed = true;
          continue;
        }
        const double gbps = bytes / c.fold_seconds / 1e9;
        const std::string agg_s =
            c.aggregate_seconds < 0 ? "skipped" : absl::StrFormat("%.3f", c.aggregate_seconds);
        std::printf("%10" PRId64 " %8d %-14s %8.2f %8.2f %9s %9.1f\n", params, updates, s.c_str(),
                    gbps, gbps / base_gbps, agg_s.c_str(), c.fold_peak_bytes / 1e6);
        if (s == "fedavg" && absl::GetFlag(FLAGS_breakdown)) {
          std::printf("%33s", "fedavg steps, GB/s:");
          for (int k = 0; k < kSteps; ++k) {
            std::printf(" %s %.2f", kStepNames[k], bytes / c.step_seconds[k] / 1e9);
          }
          std::printf("\n");
        }
        if (s == "fedavg") {
          fedavg_gbps[{params, n64}] = gbps;
          fedavg_peak_mb[{params, n64}] = c.fold_peak_bytes / 1e6;
          fedavg_fold_gbps[{params, n64}] = bytes / c.step_seconds[2] / 1e9;
          worst_fedavg_ratio = std::min(worst_fedavg_ratio, gbps / base_gbps);
        }
      }
    }
  }

  std::printf("\nfedavg/axpy, lowest over the cells: %.2f (goal >= 0.8)\n", worst_fedavg_ratio);
  for (int64_t params : params_list) {
    const auto lo = fedavg_peak_mb.find({params, updates_list.front()});
    const auto hi = fedavg_peak_mb.find({params, updates_list.back()});
    if (lo == fedavg_peak_mb.end() || hi == fedavg_peak_mb.end() || lo == hi) continue;
    std::printf("fedavg peak at %" PRId64 " params: %.1f MB at %" PRId64
                " updates, %.1f MB at %" PRId64 " (ratio %.2f; goal within 10%%)\n",
                params, lo->second, updates_list.front(), hi->second, updates_list.back(),
                lo->second > 0 ? hi->second / lo->second : 0.0);
  }

  if (!absl::GetFlag(FLAGS_python).empty()) {
    std::printf(
        "\nnumpy: Flower-style aggregate (per-layer products, functools.reduce(np.add), / total) "
        "in %d layers, same pool; its time excludes decoding and validation\n",
        absl::GetFlag(FLAGS_layers));
    std::printf("fedge: the whole path as above (speedup), and its Fold step alone (fold_x)\n");
    std::printf("%10s %8s %10s %10s %8s %10s %8s %12s %12s %12s\n", "params", "updates",
                "numpy_GB/s", "fedge_GB/s", "speedup", "fold_GB/s", "fold_x", "numpy_peakMB",
                "fedge_peakMB", "numpy_maxrss");
    double worst_speedup = 1e9, worst_fold = 1e9;
    for (int64_t params : params_list) {
      for (int64_t n64 : updates_list) {
        const int updates = static_cast<int>(n64);
        if (static_cast<double>(params) * updates > max_kept) {
          std::printf("%10" PRId64 " %8d skipped (updates x params > %.0e)\n", params, updates,
                      max_kept);
          continue;
        }
        const auto fedge = fedavg_gbps.find({params, n64});
        const NumpyResult np = RunNumpy(params, updates, pool, min_seconds);
        if (!np.ok) {
          std::printf("%10" PRId64 " %8d numpy failed: %s\n", params, updates, np.error.c_str());
          continue;
        }
        if (fedge == fedavg_gbps.end()) continue;
        const double speedup = fedge->second / np.gbps;
        const double fold = fedavg_fold_gbps[{params, n64}];
        worst_speedup = std::min(worst_speedup, speedup);
        worst_fold = std::min(worst_fold, fold / np.gbps);
        std::printf("%10" PRId64 " %8d %10.2f %10.2f %8.1f %10.2f %8.1f %12.1f %12.1f %12.1f\n",
                    params, updates, np.gbps, fedge->second, speedup, fold, fold / np.gbps,
                    np.fold_peak_mb, fedavg_peak_mb[{params, n64}], np.maxrss_mb);
      }
    }
    if (worst_speedup < 1e9) {
      std::printf(
          "fedge fedavg / numpy, lowest over the cells: %.1fx whole path, %.1fx Fold "
          "alone (goal >= 10x)\n",
          worst_speedup, worst_fold);
    }
  }
  return failed ? 1 : 0;
}
