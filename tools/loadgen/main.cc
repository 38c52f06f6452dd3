// fedge-loadgen: drives an edge's Inference API the way devices would: Predict on rows of the
// synthetic task (the fleet-wide holdout, or one site's rows, optionally drifted), then
// Feedback with each row's true label, as a later label would arrive in the field. With
// --ingest it first streams the labelled rows through Ingest, as devices delivering labelled
// data do. Prints a JSON summary per answering version, so rollouts, drift and retraining can
// be exercised and checked end to end.
//
//   fedge-loadgen --edge=127.0.0.1:7080 --duration_ms=10000 --interval_ms=20
//   fedge-loadgen --edge=127.0.0.1:7080 --synthetic_site=0 --synthetic_drift=1.5 --ingest

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
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
#include "common/app/app.h"
#include "common/data/synthetic.h"
#include "common/net/servers.h"
#include "fedge/v1/inference.grpc.pb.h"

ABSL_FLAG(std::string, edge, "127.0.0.1:7080", "host:port of the edge's Inference API.");
ABSL_FLAG(int64_t, duration_ms, 10000,
          "How long to run; SIGTERM or SIGINT ends it early (the summary is still printed).");
ABSL_FLAG(int64_t, interval_ms, 20, "Pause between requests.");
ABSL_FLAG(bool, feedback, true, "Send each row's true label back with Feedback.");
ABSL_FLAG(bool, wrong_labels, false,
          "Send a wrong label instead of the true one: makes this edge's reported accuracy "
          "collapse, to rehearse an automatic rollback.");
ABSL_FLAG(std::string, model, "", "Model to ask for (empty: the edge's only or first).");
ABSL_FLAG(uint64_t, synthetic_seed, 1, "Seed of the synthetic fleet.");
ABSL_FLAG(int, synthetic_sites, 4, "Sites of the synthetic fleet.");
ABSL_FLAG(int, synthetic_site, -1,
          "Rows of this site (0-based) instead of the fleet-wide holdout, e.g. the site the "
          "target edge serves.");
ABSL_FLAG(double, synthetic_drift, 0.0,
          "Covariate drift of the rows (0 = none; 1.0 shifts several sensors by about one "
          "standard deviation, like a recalibrated sensor).");
ABSL_FLAG(uint64_t, synthetic_stream, 11,
          "Sample stream of --synthetic_site rows (independent of the edge's own data, 0).");
ABSL_FLAG(int64_t, rows, 2000, "Rows to cycle through (and to ingest with --ingest).");
ABSL_FLAG(bool, ingest, false,
          "First stream all --rows rows with their true labels through Ingest (one call, "
          "--ingest_batch samples a message), then run Predict traffic for --duration_ms.");
ABSL_FLAG(int, ingest_batch, 100, "Samples per Ingest message (at most 4096).");
ABSL_FLAG(uint64_t, offset, 0, "First row (give each loadgen its own).");

namespace {
// SIGTERM or SIGINT ends the traffic early; the summary is still printed.
std::atomic<bool> g_stop{false};
void OnSignal(int) { g_stop = true; }
}  // namespace

int main(int argc, char** argv) {
  fedge::app::ParseFlags(
      argc, argv,
      "fedge-loadgen: Predict, Feedback and Ingest traffic against an edge, from the synthetic "
      "task.");
  fedge::data::SyntheticOptions syn;
  syn.seed = absl::GetFlag(FLAGS_synthetic_seed);
  syn.num_sites = absl::GetFlag(FLAGS_synthetic_sites);
  syn.drift = absl::GetFlag(FLAGS_synthetic_drift);
  const int site = absl::GetFlag(FLAGS_synthetic_site);
  if (site >= syn.num_sites) {
    std::cerr << "fedge-loadgen: --synthetic_site=" << site
              << " must be below --synthetic_sites=" << syn.num_sites << "\n";
    return 2;
  }
  if (absl::GetFlag(FLAGS_rows) < 1 || absl::GetFlag(FLAGS_ingest_batch) < 1) {
    std::cerr << "fedge-loadgen: --rows and --ingest_batch must be at least 1\n";
    return 2;
  }
  const fedge::data::Dataset rows =
      site >= 0 ? fedge::data::GenerateSite(syn, site, absl::GetFlag(FLAGS_rows),
                                            absl::GetFlag(FLAGS_synthetic_stream))
                : fedge::data::GenerateHoldout(syn, absl::GetFlag(FLAGS_rows));
  const int64_t f = rows.num_features();
  auto stub = fedge::v1::Inference::NewStub(fedge::net::MakeChannel(absl::GetFlag(FLAGS_edge)));

  std::string ingest_summary;
  if (absl::GetFlag(FLAGS_ingest)) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    fedge::v1::IngestResponse resp;
    auto writer = stub->Ingest(&ctx, &resp);
    const int64_t batch = absl::GetFlag(FLAGS_ingest_batch);
    for (int64_t start = 0; start < rows.size(); start += batch) {
      fedge::v1::IngestRequest req;
      req.set_model(absl::GetFlag(FLAGS_model));
      for (int64_t r = start; r < std::min(start + batch, rows.size()); ++r) {
        fedge::v1::LabelledSample* s = req.add_samples();
        s->mutable_features()->Add(rows.features.begin() + r * f,
                                   rows.features.begin() + (r + 1) * f);
        s->set_label(static_cast<int32_t>(rows.labels[static_cast<size_t>(r)]));
      }
      if (!writer->Write(req)) break;  // the edge answered early: Finish says why
    }
    writer->WritesDone();
    grpc::Status st = writer->Finish();
    if (!st.ok()) {
      std::cerr << "fedge-loadgen: Ingest failed (" << st.error_code()
                << "): " << st.error_message() << "\n";
      return 1;
    }
    ingest_summary =
        absl::StrCat("\"ingested\": ", resp.accepted(), ", \"stored\": ", resp.stored(),
                     ", \"total_added\": ", resp.total_added(), ", ");
  }

  struct Tally {
    int64_t predictions = 0, correct = 0, feedback = 0;
  };
  std::map<int64_t, Tally> by_version;
  int64_t requests = 0, errors = 0;
  std::map<std::string, int64_t> error_codes;
  const auto until = std::chrono::steady_clock::now() +
                     std::chrono::milliseconds(absl::GetFlag(FLAGS_duration_ms));
  uint64_t i = absl::GetFlag(FLAGS_offset);
  std::signal(SIGTERM, OnSignal);
  std::signal(SIGINT, OnSignal);
  while (!g_stop && std::chrono::steady_clock::now() < until) {
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
  std::cout << "{" << ingest_summary << "\"requests\": " << requests << ", \"errors\": " << errors
            << ", \"error_codes\": {" << absl::StrJoin(codes, ", ") << "}, \"by_version\": {"
            << absl::StrJoin(versions, ", ") << "}}" << std::endl;
  return 0;
}
