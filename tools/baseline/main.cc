// fedge-baseline: what federation is measured against. Trains the same initial model (an
// exported version) centrally on the pooled data of every synthetic site, and on each site
// alone, and scores all of them on the fleet-wide holdout that the coordinator uses.

#include <algorithm>
#include <iostream>

#include "absl/flags/flag.h"
#include "absl/strings/str_format.h"
#include "common/app/app.h"
#include "common/data/dataset.h"
#include "common/data/synthetic.h"
#include "common/torch/model.h"

ABSL_FLAG(std::string, archive, "", "The initial model: a version exported with fedgectl.");
ABSL_FLAG(int, synthetic_sites, 4, "Sites of the synthetic fleet (as the edges ran).");
ABSL_FLAG(uint64_t, synthetic_seed, 1, "Seed of the synthetic fleet.");
ABSL_FLAG(int64_t, synthetic_samples, 2000, "Samples per site (as the edges ran).");
ABSL_FLAG(double, holdout_fraction, 0.2, "Local holdout share (as the edges ran).");
ABSL_FLAG(uint64_t, split_seed, 0, "Seed of the edges' local split (their --seed).");
ABSL_FLAG(int64_t, holdout_samples, 2000, "Size of the fleet-wide holdout (as the job's).");
ABSL_FLAG(int, epochs, 20, "Training epochs of each baseline.");
ABSL_FLAG(double, lr, 0.05, "Learning rate.");
ABSL_FLAG(int, batch_size, 32, "Batch size.");

int main(int argc, char** argv) {
  fedge::app::Init(argc, argv,
                   "fedge-baseline: central and single-site baselines for the synthetic task.\n"
                   "  fedge-baseline --archive=v1.pt");
  fedge::torchlib::SetNumThreads(1);
  auto base = fedge::torchlib::Model::LoadFile(absl::GetFlag(FLAGS_archive));
  if (!base.ok()) {
    std::cerr << "fedge-baseline: " << base.status().message() << "\n";
    return 2;
  }
  fedge::data::SyntheticOptions syn;
  syn.num_sites = absl::GetFlag(FLAGS_synthetic_sites);
  syn.seed = absl::GetFlag(FLAGS_synthetic_seed);
  const fedge::data::Dataset holdout =
      fedge::data::GenerateHoldout(syn, absl::GetFlag(FLAGS_holdout_samples));
  fedge::torchlib::TrainOptions opt;
  opt.learning_rate = absl::GetFlag(FLAGS_lr);
  opt.epochs = absl::GetFlag(FLAGS_epochs);
  opt.batch_size = absl::GetFlag(FLAGS_batch_size);

  auto score = [&](const fedge::data::Dataset& train) -> double {
    auto model = (*base)->Clone();
    if (!model.ok()) return -1;
    auto trained = (*model)->Train(train, opt);
    if (!trained.ok()) {
      std::cerr << "fedge-baseline: " << trained.status().message() << "\n";
      return -1;
    }
    auto eval = (*model)->Evaluate(holdout);
    return eval.ok() ? eval->accuracy : -1;
  };

  fedge::data::Dataset pooled;
  double best_site = 0;
  for (int site = 0; site < syn.num_sites; ++site) {
    fedge::data::Dataset all =
        fedge::data::GenerateSite(syn, site, absl::GetFlag(FLAGS_synthetic_samples));
    fedge::data::Dataset train, local_holdout;
    fedge::data::Split(all, absl::GetFlag(FLAGS_holdout_fraction), absl::GetFlag(FLAGS_split_seed),
                       &train, &local_holdout);
    const double acc = score(train);
    best_site = std::max(best_site, acc);
    absl::PrintF("site%d_accuracy=%.4f\n", site, acc);
    if (site == 0) {
      pooled = train;
    } else if (!pooled.Append(train).ok()) {
      std::cerr << "fedge-baseline: sites disagree on features\n";
      return 2;
    }
  }
  absl::PrintF("best_site_accuracy=%.4f\n", best_site);
  absl::PrintF("central_accuracy=%.4f\n", score(pooled));
  return 0;
}
