// fedge-loadgen: drives an edge's Inference API the way devices would: Predict on rows of the
// synthetic task's fleet-wide holdout, then Feedback with each row's true label, as a later
// label would arrive in the field. Prints a JSON summary per answering version, so rollouts
// can be exercised and checked end to end.
//
//   fedge-loadgen --edge=127.0.0.1:7080 --duration_ms=10000 --interval_ms=20

#include <chrono>
#include <iostream>
#include <map>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/data/synthetic.h"
#include "common/net/servers.h"
#include "fedge/v1/inference.grpc.pb.h"

ABSL_FLAG(std::string, edge, "127.0.0.1:7080", "host:port of the edge's Inference API.");
ABSL_FLAG(int64_t, duration_ms, 10000, "How long to run.");
ABSL_FLAG(int64_t, interval_ms, 20, "Pause between requests.");
ABSL_FLAG(bool, feedback, true, "Send each row's true label back with Feedback.");
ABSL_FLAG(bool, wrong_labels, false,
          "Send a wrong label instead of the true one: makes this edge's reported accuracy "
          "collapse, to rehearse an automatic rollback.");
ABSL_FLAG(std::string, model, "", "Model to ask for (empty: the edge's only or first).");
ABSL_FLAG(uint64_t, synthetic_seed, 1, "Seed of the synthetic fleet.");
ABSL_FLAG(int, synthetic_sites, 4, "Sites of the synthetic fleet.");
ABSL_FLAG(int64_t, rows, 2000, "Holdout rows to cycle through.");
ABSL_FLAG(uint64_t, offset, 0, "First row (give each loadgen its own).");

int main(int argc, char** argv) {
  absl::FlagsUsageConfig config;
  config.contains_help_flags = [](absl::string_view f) { return !absl::StrContains(f, "absl/"); };
  config.contains_helpshort_flags = config.contains_help_flags;
  absl::SetFlagsUsageConfig(config);
  absl::SetProgramUsageMessage(
      "fedge-loadgen: Predict and Feedback traffic against an edge, from the synthetic task.");
  absl::ParseCommandLine(argc, argv);
  fedge::data::SyntheticOptions syn;
  syn.seed = absl::GetFlag(FLAGS_synthetic_seed);
  syn.num_sites = absl::GetFlag(FLAGS_synthetic_sites);
  const fedge::data::Dataset rows = fedge::data::GenerateHoldout(syn, absl::GetFlag(FLAGS_rows));
  const int64_t f = rows.num_features();
  auto stub = fedge::v1::Inference::NewStub(fedge::net::MakeChannel(absl::GetFlag(FLAGS_edge)));

  struct Tally {
    int64_t predictions = 0, correct = 0, feedback = 0;
  };
  std::map<int64_t, Tally> by_version;
  int64_t requests = 0, errors = 0;
  std::map<std::string, int64_t> error_codes;
  const auto until =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(absl::GetFlag(FLAGS_duration_ms));
  uint64_t i = absl::GetFlag(FLAGS_offset);
  while (std::chrono::steady_clock::now() < until) {
    const int64_t row = static_cast<int64_t>(i++ % static_cast<uint64_t>(rows.size()));
    fedge::v1::PredictRequest req;
    req.set_model(absl::GetFlag(FLAGS_model));
    req.mutable_instance()->mutable_features()->Add(rows.features.begin() + row * f,
                                                    rows.features.begin() + (row + 1) * f);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    fedge::v1::PredictResponse resp;
    grpc::Status st = stub->Predict(&ctx, req, &resp);
    ++requests;
    if (!st.ok()) {
      ++errors;
      ++error_codes[absl::StrCat(st.error_code())];
    } else {
      Tally& t = by_version[resp.version().version()];
      ++t.predictions;
      const bool right = resp.prediction().label() == rows.labels[static_cast<size_t>(row)];
      t.correct += right;
      if (absl::GetFlag(FLAGS_feedback)) {
        fedge::v1::FeedbackRequest fb;
        fb.set_prediction_id(resp.prediction().prediction_id());
        int32_t label = static_cast<int32_t>(rows.labels[static_cast<size_t>(row)]);
        if (absl::GetFlag(FLAGS_wrong_labels)) {
          label = (resp.prediction().label() + 1) %
                  static_cast<int32_t>(fedge::data::SyntheticLabels().size());
        }
        fb.set_label(label);
        grpc::ClientContext fctx;
        fctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
        fedge::v1::FeedbackResponse fresp;
        if (stub->Feedback(&fctx, fb, &fresp).ok()) ++t.feedback;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(absl::GetFlag(FLAGS_interval_ms)));
  }
  std::vector<std::string> versions;
  for (const auto& [v, t] : by_version) {
    versions.push_back(absl::StrCat("\"", v, "\": {\"predictions\": ", t.predictions,
                                    ", \"correct\": ", t.correct, ", \"feedback\": ", t.feedback,
                                    "}"));
  }
  std::vector<std::string> codes;
  for (const auto& [c, n] : error_codes) codes.push_back(absl::StrCat("\"", c, "\": ", n));
  std::cout << "{\"requests\": " << requests << ", \"errors\": " << errors
            << ", \"error_codes\": {" << absl::StrJoin(codes, ", ") << "}, \"by_version\": {"
            << absl::StrJoin(versions, ", ") << "}}" << std::endl;
  return 0;
}
