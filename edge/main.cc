// fedge-edge: an edge node. Serves the local Inference API on its active model versions,
// and trains on local data when the cloud asks.

#include <cstdlib>
#include <iostream>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/app/app.h"
#include "common/torch/model.h"
#include "edge/server/edge_node.h"
#include "glog/logging.h"

ABSL_FLAG(std::string, node_id, "", "This node's id: 1-64 characters [A-Za-z0-9._-]. Required.");
ABSL_FLAG(std::string, cloud, "127.0.0.1:7070",
          "host:port of the cloud's Fleet API. Empty: serve only, never connect.");
ABSL_FLAG(std::string, labels, "",
          "Node labels for cohort selection, as key=value pairs separated by commas "
          "(site=plant-3,line=a).");
ABSL_FLAG(std::string, state_dir, "",
          "Directory for the active versions and the model cache; the edge serves its last "
          "active version from here at start-up, with no cloud. Required.");
ABSL_FLAG(std::string, inference_address, "0.0.0.0:7080",
          "host:port of the local Inference gRPC API. Port 0 picks a free port.");
ABSL_FLAG(std::string, metrics_address, "0.0.0.0:9091",
          "host:port of the plaintext HTTP listener for /metrics and /healthz.");
ABSL_FLAG(std::string, ports_file, "",
          "If set, write the bound ports here (inference=N, metrics=N) once serving.");
ABSL_FLAG(int64_t, max_csv_mb, 1024,
          "Largest --data_csv accepted, in MiB; the file is held in memory while it is parsed.");
ABSL_FLAG(std::string, data_csv, "",
          "Local training data: a CSV file with a header row, numeric feature columns in the "
          "model's feature order, and a label column.");
ABSL_FLAG(std::string, label_column, "label", "The CSV column that holds the label.");
ABSL_FLAG(std::string, label_names, "",
          "Comma-separated class names in class-index order, when the CSV's labels are text.");
ABSL_FLAG(int, synthetic_site, -1,
          "Use the built-in synthetic machine-health data of this site (0-based) instead of a "
          "CSV.");
ABSL_FLAG(int, synthetic_sites, 4, "Number of sites the synthetic fleet has.");
ABSL_FLAG(uint64_t, synthetic_seed, 1, "Seed of the synthetic fleet (the same on every node).");
ABSL_FLAG(int64_t, synthetic_samples, 2000, "Samples this site generates.");
ABSL_FLAG(double, synthetic_drift, 0.0, "Covariate drift of the synthetic data (0 = none).");
ABSL_FLAG(int, synthetic_window, 0, "> 0: raw sensor windows of this length (for conv1d).");
ABSL_FLAG(double, holdout_fraction, 0.2,
          "Share of the local data kept out of training, for federated evaluation and drift "
          "references; 0 trains on all of it.");
ABSL_FLAG(int64_t, max_samples, 20000,
          "Labelled samples (Ingest, and Feedback on recent predictions) kept in "
          "<state_dir>/samples.db for fine-tuning, oldest dropped first. 0: keep none.");
ABSL_FLAG(int64_t, max_sample_age_s, 7 * 24 * 3600,
          "Stored samples older than this are dropped. 0: never.");
ABSL_FLAG(int64_t, reference_rows, 2000,
          "A newly active version's drift reference is the newest this many stored samples "
          "when the store holds that many, else the local training data.");
ABSL_FLAG(int, drift_window, 500, "Live input rows per drift window.");
ABSL_FLAG(double, drift_psi_threshold, 0.2,
          "A feature drifts when its PSI against the training data reaches this.");
ABSL_FLAG(int, drift_sustained_windows, 2,
          "Drifted windows in a row before a drift report goes to the cloud.");
ABSL_FLAG(int, initial_backoff_ms, 200,
          "First wait before dialling the cloud again; doubles per failure, with jitter.");
ABSL_FLAG(int, threads, 1, "LibTorch intra-op threads for serving.");
ABSL_FLAG(int, cpu_cores, 0,
          "Cores this node reports to the cloud for job selection (0: the machine's).");
ABSL_FLAG(int64_t, memory_mb, 0,
          "Memory in MB this node reports to the cloud for job selection (0: the machine's).");
ABSL_FLAG(int, train_threads, 1,
          "LibTorch intra-op threads of the fine-tuning thread (serving keeps --threads).");
ABSL_FLAG(double, train_cpu_share, 0.5,
          "Fine-tuning sleeps after each batch so that its thread uses at most this share of "
          "one core (0 < share <= 1; 1 = no cap). It also runs at nice +10.");
ABSL_FLAG(int, max_backoff_ms, 30000, "Longest wait between reconnect attempts.");
ABSL_FLAG(int64_t, outbox_max_messages, 100000,
          "Most messages the outbox keeps for the cloud; beyond it the oldest are dropped.");
ABSL_FLAG(int64_t, outbox_max_mb, 64, "Most megabytes the outbox keeps for the cloud.");
ABSL_FLAG(int64_t, outbox_max_age_h, 72, "Hours an undelivered message is kept.");
ABSL_FLAG(uint64_t, seed, 0, "Seed for local shuffling and reconnect jitter.");
ABSL_FLAG(bool, insecure, false,
          "Dial the cloud in PLAINTEXT, naming this node in metadata (a coordinator started "
          "with --insecure, for local demos).");
ABSL_FLAG(std::string, ca_file, "",
          "PEM certificate of the CA that signed the coordinator's certificate (a coordinator "
          "with its own CA: its <data_dir>/ca/ca.crt). Required unless --insecure.");
ABSL_FLAG(std::string, enroll_token, "",
          "Enrollment token from `fedgectl nodes token create`, used once when the node has no "
          "certificate in <state_dir>/tls. Also read from FEDGE_ENROLL_TOKEN.");
ABSL_FLAG(std::string, tls_server_name, "",
          "Name to check the coordinator's certificate against, when --cloud is an address "
          "the certificate does not name.");

int main(int argc, char** argv) {
  fedge::app::Init(argc, argv,
                   "fedge-edge: an edge node of a fedge fleet.\n"
                   "  fedge-edge --node_id=gw-1 --state_dir=/var/lib/fedge-edge "
                   "--cloud=cloud:7070 --data_csv=local.csv");
  fedge::torchlib::SetNumThreads(absl::GetFlag(FLAGS_threads));
  fedge::edge::EdgeNode::Options o;
  o.node_id = absl::GetFlag(FLAGS_node_id);
  o.cloud_address = absl::GetFlag(FLAGS_cloud);
  for (absl::string_view kv : absl::StrSplit(absl::GetFlag(FLAGS_labels), ',', absl::SkipEmpty())) {
    std::pair<std::string, std::string> p = absl::StrSplit(kv, absl::MaxSplits('=', 1));
    if (p.first.empty() || p.second.empty()) {
      std::cerr << "fedge-edge: --labels entry '" << kv << "' is not key=value\n";
      return 2;
    }
    o.labels[p.first] = p.second;
  }
  o.state_dir = absl::GetFlag(FLAGS_state_dir);
  o.inference_address = absl::GetFlag(FLAGS_inference_address);
  o.metrics_address = absl::GetFlag(FLAGS_metrics_address);
  o.data_csv = absl::GetFlag(FLAGS_data_csv);
  o.max_csv_mb = absl::GetFlag(FLAGS_max_csv_mb);
  o.label_column = absl::GetFlag(FLAGS_label_column);
  o.label_names = absl::StrSplit(absl::GetFlag(FLAGS_label_names), ',', absl::SkipEmpty());
  o.synthetic_site = absl::GetFlag(FLAGS_synthetic_site);
  o.synthetic_sites = absl::GetFlag(FLAGS_synthetic_sites);
  o.synthetic_seed = absl::GetFlag(FLAGS_synthetic_seed);
  o.synthetic_samples = absl::GetFlag(FLAGS_synthetic_samples);
  o.synthetic_drift = absl::GetFlag(FLAGS_synthetic_drift);
  o.synthetic_window = absl::GetFlag(FLAGS_synthetic_window);
  o.holdout_fraction = absl::GetFlag(FLAGS_holdout_fraction);
  o.max_samples = absl::GetFlag(FLAGS_max_samples);
  o.max_sample_age = absl::Seconds(absl::GetFlag(FLAGS_max_sample_age_s));
  o.reference_rows = absl::GetFlag(FLAGS_reference_rows);
  o.train_threads = absl::GetFlag(FLAGS_train_threads);
  o.cpu_cores = absl::GetFlag(FLAGS_cpu_cores);
  o.memory_mb = absl::GetFlag(FLAGS_memory_mb);
  o.train_cpu_share = absl::GetFlag(FLAGS_train_cpu_share);
  o.drift_window = absl::GetFlag(FLAGS_drift_window);
  o.drift_psi_threshold = absl::GetFlag(FLAGS_drift_psi_threshold);
  o.drift_sustained_windows = absl::GetFlag(FLAGS_drift_sustained_windows);
  o.initial_backoff = absl::Milliseconds(absl::GetFlag(FLAGS_initial_backoff_ms));
  o.max_backoff = absl::Milliseconds(absl::GetFlag(FLAGS_max_backoff_ms));
  if (o.initial_backoff <= absl::ZeroDuration() || o.max_backoff < o.initial_backoff) {
    std::cerr << "fedge-edge: need 0 < --initial_backoff_ms <= --max_backoff_ms\n";
    return 2;
  }
  o.outbox_max_messages = absl::GetFlag(FLAGS_outbox_max_messages);
  o.outbox_max_bytes = absl::GetFlag(FLAGS_outbox_max_mb) << 20;
  o.outbox_max_age = absl::Hours(absl::GetFlag(FLAGS_outbox_max_age_h));
  o.seed = absl::GetFlag(FLAGS_seed);
  o.insecure = absl::GetFlag(FLAGS_insecure);
  o.ca_file = absl::GetFlag(FLAGS_ca_file);
  o.enroll_token = absl::GetFlag(FLAGS_enroll_token);
  if (o.enroll_token.empty() && std::getenv("FEDGE_ENROLL_TOKEN") != nullptr) {
    o.enroll_token = std::getenv("FEDGE_ENROLL_TOKEN");
  }
  o.tls_server_name = absl::GetFlag(FLAGS_tls_server_name);
  auto node = fedge::edge::EdgeNode::Start(o);
  if (!node.ok()) {
    std::cerr << "fedge-edge: " << node.status().message() << "\n";
    return 2;
  }
  const std::string ports_file = absl::GetFlag(FLAGS_ports_file);
  if (!ports_file.empty() &&
      !fedge::app::WriteFileAtomically(
          ports_file, absl::StrCat("inference=", (*node)->inference_port(),
                                   "\nmetrics=", (*node)->metrics_port(), "\n"))) {
    std::cerr << "fedge-edge: cannot write --ports_file " << ports_file << "\n";
    return 2;
  }
  int sig = fedge::app::WaitForTermination();
  LOG(INFO) << "signal " << sig << " received";
  (*node)->Shutdown();
  return 0;
}
