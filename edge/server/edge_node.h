#ifndef FEDGE_EDGE_SERVER_EDGE_NODE_H_
#define FEDGE_EDGE_SERVER_EDGE_NODE_H_

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/tensor/flat.h"
#include "edge/outbox/outbox.h"
#include "fedge/v1/fleet.pb.h"

namespace fedge::edge {

// A whole edge node: local data, the runtime with its persisted active versions, the agent
// that talks to the cloud, the local Inference gRPC server and the plaintext /metrics port.
// The binary and the in-process integration tests both use it.
class EdgeNode {
 public:
  struct Options {
    std::string node_id;
    std::string cloud_address;
    std::map<std::string, std::string> labels;
    std::string state_dir;
    std::string inference_address = "0.0.0.0:7080";
    std::string metrics_address = "0.0.0.0:9091";

    // Local data: a CSV file, or a site of the built-in synthetic generator, or none (the node
    // then only serves).
    std::string data_csv;
    int64_t max_csv_mb = 1024;  // a larger --data_csv is refused at start-up
    std::string label_column = "label";
    std::vector<std::string> label_names;  // for text labels in the CSV
    int synthetic_site = -1;
    int synthetic_sites = 4;
    uint64_t synthetic_seed = 1;
    int64_t synthetic_samples = 2000;
    double synthetic_drift = 0;
    int synthetic_window = 0;
    double holdout_fraction = 0.2;

    // Labelled samples from the field (Ingest, and Feedback on remembered predictions), kept
    // in <state_dir>/samples.db with the local data's feature schema. Fine-tuning uses the local
    // data plus these. 0 max_samples: no store (a node without local data has none either).
    int64_t max_samples = 20000;
    absl::Duration max_sample_age = absl::Hours(24 * 7);  // zero: samples never expire

    // Drift watch over live inputs, against a reference built from the node's newest
    // reference_rows samples when the store holds that many, else from the local training
    // data.
    int64_t reference_rows = 2000;
    int drift_window = 500;
    double drift_psi_threshold = 0.2;
    int drift_sustained_windows = 2;

    // The outbox of messages for the cloud (state_dir/outbox.db) and its bounds.
    int64_t outbox_max_messages = 100000;
    int64_t outbox_max_bytes = 64 << 20;
    absl::Duration outbox_max_age = absl::Hours(72);
    // Fine-tuning runs beside serving: its own intra-op threads, at most this share of one
    // core, and a nice increment for its thread.
    int train_threads = 1;
    double train_cpu_share = 0.5;
    // Reported to the cloud for job selection (SelectionSpec.min_cpu_cores, min_memory_mb);
    // 0: the machine's.
    int cpu_cores = 0;
    int64_t memory_mb = 0;
    int train_nice = 10;

    absl::Duration initial_backoff = absl::Milliseconds(200);
    absl::Duration max_backoff = absl::Seconds(30);
    uint64_t seed = 0;
    std::function<void(const v1::UpdateHeader&, const FlatTensor&)> on_update_sent;

    // Mutual TLS toward the cloud: ca_file is the CA that signed the coordinator's
    // certificate. The node's key and certificate live in <state_dir>/tls; without a
    // certificate the node enrolls with enroll_token. `insecure`: plaintext, the node named
    // in metadata (a coordinator started with --insecure).
    bool insecure = false;
    std::string ca_file;
    std::string enroll_token;
    std::string tls_server_name;
  };

  // Loads the data (a malformed CSV fails here, naming line and column), restores the active
  // versions, starts serving and dials the cloud.
  static absl::StatusOr<std::unique_ptr<EdgeNode>> Start(Options options);
  ~EdgeNode();

  int inference_port() const;
  int metrics_port() const;
  bool connected() const;
  // Rows of the local (base) training data.
  int64_t train_samples() const;
  outbox::Outbox::Stats outbox_stats() const;
  // Samples the sample store holds now, and has ever accepted (0 without a store).
  int64_t samples_stored() const;
  int64_t samples_total() const;
  // The model versions this node serves, by model name.
  std::map<std::string, v1::VersionRef> ActiveVersions() const;

  void Shutdown();

 private:
  struct Impl;
  explicit EdgeNode(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace fedge::edge

#endif  // FEDGE_EDGE_SERVER_EDGE_NODE_H_
