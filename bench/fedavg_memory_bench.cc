// FedAvg's memory against the number of participants, next to a baseline that keeps every
// update until the round ends (what median, trimmed mean or Krum need). Prints peak resident
// memory growth per strategy and their ratio, measured in one run.
//
//   build/bench/fedavg_memory_bench [--elements=1000000]

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "cloud/aggregation/strategy.h"

namespace {

// Current resident set size in bytes, from /proc/self/statm.
long ResidentBytes() {
  long pages = 0, resident = 0;
  FILE* f = std::fopen("/proc/self/statm", "r");
  if (f == nullptr) return 0;
  if (std::fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
  std::fclose(f);
  return resident * 4096;
}

void Fill(std::vector<float>* v, std::mt19937* rng) {
  std::uniform_real_distribution<float> d(-1e-3f, 1e-3f);
  for (float& x : *v) x = d(*rng);
}

// Runs one strategy over n participants in a child process and returns its peak resident
// growth in bytes, so runs do not share allocator state.
long MeasureInChild(bool keep_all, int n, long elements) {
  int fds[2];
  if (pipe(fds) != 0) return -1;
  pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    std::mt19937 rng(static_cast<unsigned>(n));
    std::vector<float> update(static_cast<size_t>(elements));
    std::vector<float> base(static_cast<size_t>(elements), 0.0f);
    Fill(&update, &rng);
    const long before = ResidentBytes();
    long peak = before;
    if (keep_all) {
      std::vector<std::vector<float>> all;
      for (int i = 0; i < n; ++i) {
        all.push_back(update);
        Fill(&all.back(), &rng);
        peak = std::max(peak, ResidentBytes());
      }
      std::vector<double> sum(static_cast<size_t>(elements), 0.0);
      for (const auto& u : all) {
        for (size_t j = 0; j < sum.size(); ++j) sum[j] += u[j];
      }
      peak = std::max(peak, ResidentBytes());
    } else {
      auto strategy = fedge::cloud::aggregation::Strategy::Create({}, elements);  // FedAvg
      if (!strategy.ok()) _exit(1);
      fedge::cloud::aggregation::Strategy& avg = **strategy;
      for (int i = 0; i < n; ++i) {
        Fill(&update, &rng);  // the staging buffer of the next upload, reused
        if (!avg.Fold({update, 100 + i}).ok()) _exit(1);
        peak = std::max(peak, ResidentBytes());
      }
      auto out = avg.Finish(base);
      if (!out.ok()) _exit(1);
      peak = std::max(peak, ResidentBytes());
    }
    long grown = peak - before;
    if (write(fds[1], &grown, sizeof(grown)) != sizeof(grown)) _exit(1);
    _exit(0);
  }
  close(fds[1]);
  long grown = -1;
  if (read(fds[0], &grown, sizeof(grown)) != sizeof(grown)) grown = -1;
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  return grown;
}

}  // namespace

int main(int argc, char** argv) {
  long elements = 1000000;
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "--elements=", 11) == 0) elements = std::atol(argv[i] + 11);
  }
  std::printf("model: %ld float32 values (%.1f MB per update)\n", elements, elements * 4 / 1e6);
  std::printf("%12s %18s %18s %10s\n", "participants", "fedavg_growth_MB", "keep_all_growth_MB",
              "keep/fedavg");
  for (int n : {4, 16, 64, 256}) {
    const long avg = MeasureInChild(false, n, elements);
    const long all = MeasureInChild(true, n, elements);
    if (avg < 0 || all < 0) return 1;
    std::printf("%12d %18.1f %18.1f %10.1f\n", n, avg / 1e6, all / 1e6,
                avg > 0 ? static_cast<double>(all) / avg : 0.0);
  }
  return 0;
}
