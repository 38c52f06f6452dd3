#include "cloud/fleet/fleet.h"

#include <algorithm>
#include <map>
#include <utility>

#include "common/metrics/metrics.h"
#include "glog/logging.h"

namespace fedge::cloud::fleet {
namespace {

// Distinct values of the `site` label in the node gauges; nodes of further sites count as
// "other", so a mislabelled fleet cannot blow up the series count.
constexpr size_t kMaxSites = 64;

prometheus::Gauge& ConnectedGauge(const std::string& site) {
  return metrics::GaugeFamily("fedge_cloud_connected_nodes",
                              "Edge nodes with an open Session stream, by their site label.")
      .Add({{"site", site}});
}

prometheus::Gauge& KnownGauge(const std::string& site) {
  return metrics::GaugeFamily(
             "fedge_cloud_nodes",
             "Edge nodes that said hello since the coordinator started, by their site label.")
      .Add({{"site", site}});
}

prometheus::Counter& SessionsCounter() {
  static auto& c = metrics::CounterFamily("fedge_cloud_sessions_total",
                                          "Session streams opened by edge nodes.")
                       .Add({});
  return c;
}

}  // namespace

Fleet::Fleet(Options options) : options_(options) {
  MutexLock lock(&mu_);
  PublishCountsLocked();
}

void Fleet::PublishCountsLocked() {
  std::map<std::string, std::pair<int, int>> counts;  // site -> (connected, known)
  for (const std::string& site : sites_) counts[site] = {0, 0};
  counts["none"];
  for (const auto& [id, node] : nodes_) {
    auto label = node.info.labels().find("site");
    std::string site = label == node.info.labels().end() || label->second.empty()
                           ? "none"
                           : label->second;
    if (sites_.count(site) == 0 && sites_.size() >= kMaxSites) site = "other";
    sites_.insert(site);
    auto& [connected, known] = counts[site];
    connected += node.sink != nullptr ? 1 : 0;
    known += 1;
  }
  for (const auto& [site, c] : counts) {
    sites_.insert(site);
    ConnectedGauge(site).Set(c.first);
    KnownGauge(site).Set(c.second);
  }
}

uint64_t Fleet::Connect(const v1::Hello& hello, const std::string& peer,
                        std::shared_ptr<SessionSink> sink) {
  std::shared_ptr<SessionSink> replaced;
  uint64_t id;
  {
    MutexLock lock(&mu_);
    NodeState& node = nodes_[hello.node_id()];
    if (node.sink != nullptr) replaced = std::move(node.sink);
    id = next_session_id_++;
    node.session_id = id;
    node.sink = std::move(sink);
    node.last_seen = options_.clock->Now();
    v1::Node& info = node.info;
    info.set_node_id(hello.node_id());
    *info.mutable_labels() = hello.labels();
    info.mutable_capabilities()->CopyFrom(hello.capabilities());
    *info.mutable_active_versions() = hello.active_versions();
    info.set_software_version(hello.software_version());
    info.set_cpu_cores(hello.cpu_cores());
    info.set_memory_mb(hello.memory_mb());
    info.set_local_samples(std::max<int64_t>(0, hello.local_samples()));
    info.set_peer(peer);
    info.set_connected(true);
    PublishCountsLocked();
  }
  SessionsCounter().Increment();
  if (replaced) {
    LOG(INFO) << "node=" << hello.node_id() << " reconnected; closing its previous session";
    replaced->Close(absl::AbortedError("a newer session of this node replaced this one"));
  }
  LOG(INFO) << "node=" << hello.node_id() << " connected from " << peer;
  if (options_.on_presence) options_.on_presence(hello.node_id(), true);
  return id;
}

void Fleet::Disconnect(const std::string& node_id, uint64_t session_id) {
  {
    MutexLock lock(&mu_);
    auto it = nodes_.find(node_id);
    if (it == nodes_.end() || it->second.session_id != session_id) return;
    it->second.session_id = 0;
    it->second.sink.reset();
    it->second.info.set_connected(false);
    PublishCountsLocked();
  }
  LOG(INFO) << "node=" << node_id << " disconnected";
  if (options_.on_presence) options_.on_presence(node_id, false);
}

void Fleet::Heartbeat(const std::string& node_id, const v1::Heartbeat& heartbeat) {
  MutexLock lock(&mu_);
  auto it = nodes_.find(node_id);
  if (it == nodes_.end()) return;
  it->second.last_seen = options_.clock->Now();
}

void Fleet::ReportDeploy(const std::string& node_id, const v1::DeployStatus& status) {
  MutexLock lock(&mu_);
  auto it = nodes_.find(node_id);
  if (it == nodes_.end()) return;
  it->second.last_seen = options_.clock->Now();
  if (status.ok()) {
    (*it->second.info.mutable_active_versions())[status.version().model()] = status.version();
  }
}

void Fleet::SetDesired(const std::string& node_id, const v1::VersionRef& version) {
  MutexLock lock(&mu_);
  NodeState& node = nodes_[node_id];
  node.info.set_node_id(node_id);
  (*node.info.mutable_desired_versions())[version.model()] = version;
}

void Fleet::ClearDesired(const std::string& node_id, const std::string& model) {
  MutexLock lock(&mu_);
  auto it = nodes_.find(node_id);
  if (it != nodes_.end()) it->second.info.mutable_desired_versions()->erase(model);
}

bool Fleet::Send(const std::string& node_id, const v1::CloudMessage& message) {
  std::shared_ptr<SessionSink> sink;
  {
    MutexLock lock(&mu_);
    auto it = nodes_.find(node_id);
    if (it == nodes_.end() || it->second.sink == nullptr) return false;
    sink = it->second.sink;
  }
  return sink->Send(message);
}

bool Fleet::AliveLocked(const NodeState& node) const {
  return node.sink != nullptr &&
         options_.clock->Now() - node.last_seen <= options_.liveness_timeout;
}

int Fleet::ConnectedCountLocked() const {
  int n = 0;
  for (const auto& [id, node] : nodes_) n += node.sink != nullptr;
  return n;
}

std::vector<std::string> Fleet::Eligible(const std::map<std::string, std::string>& selector,
                                         const std::string& capability) const {
  NodeFilter filter;
  filter.labels = selector;
  filter.capability = capability;
  return Eligible(filter);
}

std::vector<std::string> Fleet::Eligible(const NodeFilter& filter) const {
  std::vector<std::string> out;
  MutexLock lock(&mu_);
  for (const auto& [id, node] : nodes_) {
    if (AliveLocked(node) && filter.Matches(node.info)) out.push_back(id);
  }
  std::sort(out.begin(), out.end());
  return out;
}

bool NodeFilter::Matches(const v1::Node& node) const {
  for (const auto& [key, value] : labels) {
    auto it = node.labels().find(key);
    if (it == node.labels().end() || it->second != value) return false;
  }
  if (!capability.empty()) {
    const auto& caps = node.capabilities();
    if (std::find(caps.begin(), caps.end(), capability) == caps.end()) return false;
  }
  return node.cpu_cores() >= min_cpu_cores && node.memory_mb() >= min_memory_mb;
}

bool Fleet::IsConnected(const std::string& node_id) const {
  MutexLock lock(&mu_);
  auto it = nodes_.find(node_id);
  return it != nodes_.end() && it->second.sink != nullptr;
}

int64_t Fleet::LocalSamples(const std::string& node_id) const {
  MutexLock lock(&mu_);
  auto it = nodes_.find(node_id);
  return it == nodes_.end() ? 0 : it->second.info.local_samples();
}

void Fleet::ReportMetrics(const std::string& node_id, const v1::MetricsReport& report) {
  auto samples = report.values().find("local_samples");
  if (samples == report.values().end()) return;
  // A claim, bounded to what an int64 holds; the job manager caps it again.
  const double v = samples->second;
  const int64_t n = v >= 0 && v < 9.2e18 ? static_cast<int64_t>(v) : 0;
  MutexLock lock(&mu_);
  auto it = nodes_.find(node_id);
  if (it != nodes_.end()) it->second.info.set_local_samples(n);
}

std::vector<v1::Node> Fleet::List() const {
  std::vector<v1::Node> out;
  MutexLock lock(&mu_);
  for (const auto& [id, node] : nodes_) {
    v1::Node info = node.info;
    info.set_alive(AliveLocked(node));
    info.set_last_seen_unix_ms(node.last_seen == absl::Time() ? 0
                                                               : absl::ToUnixMillis(node.last_seen));
    out.push_back(std::move(info));
  }
  std::sort(out.begin(), out.end(),
            [](const v1::Node& a, const v1::Node& b) { return a.node_id() < b.node_id(); });
  return out;
}

int Fleet::ConnectedCount() const {
  MutexLock lock(&mu_);
  return ConnectedCountLocked();
}

void Fleet::Close(const std::string& node_id, const absl::Status& status) {
  std::shared_ptr<SessionSink> sink;
  {
    MutexLock lock(&mu_);
    auto it = nodes_.find(node_id);
    if (it != nodes_.end()) sink = it->second.sink;
  }
  if (sink) sink->Close(status);
}

void Fleet::CloseAll(const absl::Status& status) {
  std::vector<std::shared_ptr<SessionSink>> sinks;
  {
    MutexLock lock(&mu_);
    for (auto& [id, node] : nodes_) {
      if (node.sink) sinks.push_back(node.sink);
    }
  }
  for (auto& sink : sinks) sink->Close(status);
}

}  // namespace fedge::cloud::fleet
