#include "edge/server/edge_node.h"

#include "absl/strings/str_cat.h"
#include "common/data/dataset.h"
#include "common/data/synthetic.h"
#include "common/net/identity.h"
#include "common/net/servers.h"
#include "common/status/status.h"
#include "edge/agent/agent.h"
#include "edge/agent/credentials.h"
#include "edge/outbox/outbox.h"
#include "edge/runtime/runtime.h"
#include "edge/samples/sample_store.h"
#include "edge/serving/drift_watch.h"
#include "edge/serving/health.h"
#include "edge/serving/inference_service.h"
#include "glog/logging.h"

namespace fedge::edge {

struct EdgeNode::Impl {
  data::Dataset train;
  data::Dataset holdout;
  // Declared before its users, so that it outlives them.
  std::unique_ptr<samples::SampleStore> store;
  std::unique_ptr<runtime::Runtime> runtime;
  std::unique_ptr<outbox::Outbox> outbox;
  std::unique_ptr<codec::ErrorFeedback> error_feedback;
  serving::HealthTracker health{serving::HealthTracker::Options{}};
  std::unique_ptr<serving::DriftWatch> drift;
  std::unique_ptr<serving::InferenceService> inference;
  net::StartedGrpcServer server;
  std::unique_ptr<net::HttpServer> http;
  std::unique_ptr<agent::NodeCredentials> credentials;  // null: insecure
  std::unique_ptr<agent::Agent> agent;
  bool shut_down = false;
};

absl::StatusOr<std::unique_ptr<EdgeNode>> EdgeNode::Start(Options options) {
  FEDGE_RETURN_IF_ERROR(net::ValidateNodeId(options.node_id));
  if (options.state_dir.empty()) {
    return absl::InvalidArgumentError("--state_dir is required: where the edge keeps its models");
  }
  if (!options.data_csv.empty() && options.synthetic_site >= 0) {
    return absl::InvalidArgumentError("give --data_csv or --synthetic_site, not both");
  }
  if (!options.insecure && !options.cloud_address.empty()) {
    if (options.ca_file.empty()) {
      return absl::InvalidArgumentError(
          "--ca_file is required: the CA certificate that signed the coordinator's (for a "
          "coordinator with its own CA: <data_dir>/ca/ca.crt). Or --insecure for a plaintext "
          "coordinator");
    }
    FEDGE_RETURN_IF_ERROR(net::CheckReadable(options.ca_file, "--ca_file"));
  }
  auto impl = std::make_unique<Impl>();
  data::Dataset all;
  if (!options.data_csv.empty()) {
    data::CsvOptions csv;
    csv.label_column = options.label_column;
    csv.label_names = options.label_names;
    csv.max_bytes = options.max_csv_mb << 20;
    auto read = data::ReadCsv(options.data_csv, csv);
    if (read.status().code() == absl::StatusCode::kResourceExhausted) {
      return absl::ResourceExhaustedError(
          absl::StrCat(read.status().message(), " (--max_csv_mb=", options.max_csv_mb, ")"));
    }
    FEDGE_ASSIGN_OR_RETURN(all, std::move(read));
  } else if (options.synthetic_site >= 0) {
    if (options.synthetic_site >= options.synthetic_sites) {
      return absl::InvalidArgumentError(absl::StrCat("--synthetic_site=", options.synthetic_site,
                                                     " must be below --synthetic_sites=",
                                                     options.synthetic_sites));
    }
    data::SyntheticOptions syn;
    syn.num_sites = options.synthetic_sites;
    syn.seed = options.synthetic_seed;
    syn.drift = options.synthetic_drift;
    syn.window = options.synthetic_window;
    all = data::GenerateSite(syn, options.synthetic_site, options.synthetic_samples);
  }
  if (all.size() > 0) {
    data::Split(all, options.holdout_fraction, options.seed, &impl->train, &impl->holdout);
  }
  impl->train.feature_names = all.feature_names;
  impl->holdout.feature_names = all.feature_names;
  runtime::TrainLimits limits;
  limits.threads = options.train_threads;
  limits.cpu_share = options.train_cpu_share;
  limits.nice = options.train_nice;
  FEDGE_RETURN_IF_ERROR(runtime::ValidateTrainLimits(limits));
  if (options.train_threads < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--train_threads must be at least 1, got ", options.train_threads));
  }
  if (options.cpu_cores < 0 || options.memory_mb < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--cpu_cores and --memory_mb must not be negative (0: the machine's), got ",
        options.cpu_cores, " and ", options.memory_mb));
  }
  if (options.reference_rows < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--reference_rows must be at least 1, got ", options.reference_rows));
  }
  if (options.max_samples < 0 || options.max_sample_age < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("--max_samples and --max_sample_age_s must not be negative");
  }
  // Class names, when the node knows them: for sample labels sent by name.
  std::vector<std::string> label_names = options.label_names;
  if (options.synthetic_site >= 0) label_names = data::SyntheticLabels();
  // The store takes the local data's feature schema; a node without local data has none.
  if (options.max_samples > 0 && !all.feature_names.empty()) {
    samples::SampleStore::Options store_opts;
    store_opts.path = options.state_dir + "/samples.db";
    store_opts.feature_names = all.feature_names;
    store_opts.num_classes = static_cast<int64_t>(label_names.size());
    store_opts.max_samples = options.max_samples;
    store_opts.max_age = options.max_sample_age;
    FEDGE_ASSIGN_OR_RETURN(impl->store, samples::SampleStore::Open(store_opts));
  }
  Impl* const state = impl.get();
  serving::DriftWatch::Options drift_opts;
  // The newest samples describe today's conditions best; the base data stands in until there
  // are enough of them.
  drift_opts.reference = [state, rows = options.reference_rows, node_id = options.node_id] {
    if (state->store != nullptr && state->store->Count() >= rows) {
      auto recent = state->store->Recent(rows);
      if (recent.ok() && recent->size() >= rows) return *std::move(recent);
      if (!recent.ok()) {
        LOG(WARNING) << "node=" << node_id
                     << " drift reference from the base data: " << recent.status();
      }
    }
    return state->train;
  };
  drift_opts.monitor.window = options.drift_window;
  drift_opts.monitor.psi_threshold = options.drift_psi_threshold;
  drift_opts.monitor.sustained_windows = options.drift_sustained_windows;
  impl->drift = std::make_unique<serving::DriftWatch>(drift_opts);
  runtime::Runtime::Options runtime_opts;
  runtime_opts.state_dir = options.state_dir;
  serving::DriftWatch* drift = impl->drift.get();
  const std::string node_id = options.node_id;
  // Every version, restored at start-up or deployed later, is watched from its first row.
  runtime_opts.on_loaded = [drift, node_id](const runtime::LoadedModel& loaded) {
    absl::Status st = drift->Prepare(loaded);
    if (!st.ok()) LOG(WARNING) << "node=" << node_id << " " << st;
  };
  FEDGE_ASSIGN_OR_RETURN(impl->runtime, runtime::Runtime::Open(runtime_opts));
  outbox::Outbox::Options outbox_opts;
  outbox_opts.path = options.state_dir + "/outbox.db";
  outbox_opts.max_messages = options.outbox_max_messages;
  outbox_opts.max_bytes = options.outbox_max_bytes;
  outbox_opts.max_age = options.outbox_max_age;
  FEDGE_ASSIGN_OR_RETURN(impl->outbox, outbox::Outbox::Open(outbox_opts));
  FEDGE_ASSIGN_OR_RETURN(impl->error_feedback,
                         codec::ErrorFeedback::Open({options.state_dir + "/residuals"}));
  serving::LocalSamples local;
  local.store = impl->store.get();
  local.label_names = label_names;
  impl->inference = std::make_unique<serving::InferenceService>(
      impl->runtime.get(), &impl->health, impl->drift.get(), std::move(local));
  net::GrpcServerOptions grpc_opts;
  grpc_opts.address = options.inference_address;
  grpc_opts.services = {{impl->inference.get(), v1::Inference::service_full_name()}};
  FEDGE_ASSIGN_OR_RETURN(impl->server, net::StartGrpcServer(grpc_opts));
  std::string host;
  int port = 0;
  FEDGE_RETURN_IF_ERROR(net::ParseHostPort(options.metrics_address, &host, &port));
  FEDGE_ASSIGN_OR_RETURN(impl->http, net::HttpServer::Start(host, port, nullptr));

  agent::Agent::Options agent_opts;
  agent_opts.node_id = options.node_id;
  agent_opts.cloud_address = options.cloud_address;
  agent_opts.labels = options.labels;
  agent_opts.cpu_cores = options.cpu_cores;
  agent_opts.memory_mb = options.memory_mb;
  agent_opts.runtime = impl->runtime.get();
  agent_opts.outbox = impl->outbox.get();
  agent_opts.error_feedback = impl->error_feedback.get();
  // The base data plus every labelled sample gathered so far, read as each task starts.
  agent_opts.training_data = [state, node_id] {
    data::Dataset train = state->train;
    if (state->store != nullptr) {
      auto gathered = state->store->All();
      absl::Status st = gathered.status();
      if (st.ok()) st = train.Append(*gathered);
      if (!st.ok()) {
        LOG(WARNING) << "node=" << node_id << " training without the sample store: " << st;
      }
    }
    return train;
  };
  auto local_rows = [state]() -> int64_t {
    return state->train.size() + (state->store != nullptr ? state->store->Count() : 0);
  };
  agent_opts.local_samples = local_rows;
  agent_opts.train_limits = limits;
  // What the cloud's data-arrival retraining trigger counts, and the rows training would use
  // now (the cloud weighs no update of this node above it).
  agent_opts.metrics = [state, local_rows] {
    std::map<std::string, double> values;
    if (state->store != nullptr) {
      values["samples_total"] = static_cast<double>(state->store->TotalAdded());
    }
    values["local_samples"] = static_cast<double>(local_rows());
    return values;
  };
  agent_opts.holdout_data = &impl->holdout;
  agent_opts.initial_backoff = options.initial_backoff;
  agent_opts.max_backoff = options.max_backoff;
  agent_opts.seed = options.seed;
  agent_opts.on_update_sent = options.on_update_sent;
  runtime::Runtime* rt = impl->runtime.get();
  serving::HealthTracker* health = &impl->health;
  agent_opts.health_reports = [rt, health] { return health->Reports(rt->ActiveVersions()); };
  agent_opts.on_activated = [health](const v1::VersionRef& v) { health->Reset(v.sha256()); };
  agent_opts.drift_reports = [drift] { return drift->TakeReports(); };
  if (impl->train.size() == 0 && impl->store == nullptr) agent_opts.capabilities = {"predict"};
  if (!options.insecure && !options.cloud_address.empty()) {
    agent::NodeCredentials::Options creds;
    creds.node_id = options.node_id;
    creds.cloud_address = options.cloud_address;
    creds.dir = options.state_dir + "/tls";
    creds.ca_file = options.ca_file;
    creds.enroll_token = options.enroll_token;
    creds.server_name = options.tls_server_name;
    impl->credentials = std::make_unique<agent::NodeCredentials>(creds);
    // Enroll now if the cloud is there, so the channel starts with the certificate; if not,
    // the agent keeps trying while the node serves.
    absl::Status ready = impl->credentials->Ensure();
    if (!ready.ok()) LOG(WARNING) << "node=" << options.node_id << ": " << ready;
    agent_opts.tls = impl->credentials->channel_tls();
    agent::NodeCredentials* credentials = impl->credentials.get();
    agent_opts.before_session = [credentials] { return credentials->Ensure(); };
  }
  impl->agent = std::make_unique<agent::Agent>(agent_opts);
  if (!options.cloud_address.empty()) impl->agent->Start();
  LOG(INFO) << "node=" << options.node_id << " fedge-edge serving Inference on port "
            << impl->server.port << ", metrics on port " << impl->http->port() << "; "
            << impl->train.size() << " training and " << impl->holdout.size() << " holdout samples"
            << (impl->store != nullptr ? absl::StrCat("; ", impl->store->Count(), " stored samples")
                                       : std::string());
  return std::unique_ptr<EdgeNode>(new EdgeNode(std::move(impl)));
}

EdgeNode::EdgeNode(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
EdgeNode::~EdgeNode() { Shutdown(); }

int EdgeNode::inference_port() const { return impl_->server.port; }
int EdgeNode::metrics_port() const { return impl_->http->port(); }
bool EdgeNode::connected() const { return impl_->agent->connected(); }
int64_t EdgeNode::train_samples() const { return impl_->train.size(); }
outbox::Outbox::Stats EdgeNode::outbox_stats() const { return impl_->outbox->stats(); }
int64_t EdgeNode::samples_stored() const {
  return impl_->store != nullptr ? impl_->store->Count() : 0;
}
int64_t EdgeNode::samples_total() const {
  return impl_->store != nullptr ? impl_->store->TotalAdded() : 0;
}
std::map<std::string, v1::VersionRef> EdgeNode::ActiveVersions() const {
  return impl_->runtime->ActiveVersions();
}

void EdgeNode::Shutdown() {
  if (impl_->shut_down) return;
  impl_->shut_down = true;
  impl_->agent->Stop();
  net::StopGrpcServer(&impl_->server, std::chrono::seconds(5));
  impl_->http->Stop();
}

}  // namespace fedge::edge
