// fedgectl: the operators' command line, a client of the cloud's Admin API.
// Tables for people by default; --output=json for scripts.

#include <pwd.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/app/app.h"
#include "common/auth/tokens.h"
#include "common/data/dataset.h"
#include "common/data/synthetic.h"
#include "common/net/identity.h"
#include "common/net/servers.h"
#include "common/tensor/sha256.h"
#include "fedge/v1/admin.grpc.pb.h"
#include "fedge/v1/inference.grpc.pb.h"
#include "google/protobuf/util/json_util.h"
#include "tools/fedgectl/cli.h"

ABSL_FLAG(std::string, admin, "127.0.0.1:7071", "host:port of the cloud's Admin API.");
ABSL_FLAG(std::string, output, "table", "table (for people) or json (for scripts).");
// Longer than the coordinator's default model check (--model_check_timeout_s, 120 s), so that a
// refused archive shows the check's reason rather than this deadline.
ABSL_FLAG(int, timeout_s, 180, "Deadline of each call, in seconds.");
ABSL_FLAG(std::string, token, "",
          "Admin API bearer token (sent as `authorization: Bearer <token>`). Default: the "
          "FEDGE_TOKEN environment variable. Prefer the variable: flags show in `ps`.");
ABSL_FLAG(bool, insecure, false,
          "Talk PLAINTEXT to a coordinator started with --insecure. Otherwise TLS, trusting "
          "--ca_file.");
ABSL_FLAG(std::string, ca_file, "",
          "PEM CA certificate that signed the coordinator's (with its own CA: "
          "<data_dir>/ca/ca.crt). Default: $FEDGE_CA_FILE, else the system's CAs.");
ABSL_FLAG(std::string, tls_server_name, "",
          "Name to check the coordinator's certificate against, when --admin is an address it "
          "does not name.");
// tokens create
ABSL_FLAG(std::string, role, "", "tokens create: viewer, operator or admin.");
// nodes token create, nodes disable|enable|revoke
ABSL_FLAG(int, uses, 1, "nodes token create: how many nodes may enroll with the token.");
ABSL_FLAG(double, ttl_h, 24, "nodes token create: hours until the token expires.");
ABSL_FLAG(std::string, node_labels, "",
          "nodes token create: labels bound to every node that enrolls, key=value,...");
// models register
ABSL_FLAG(std::string, name, "", "Model name.");
ABSL_FLAG(std::string, builtin, "", "Built-in architecture: mlp or conv1d.");
ABSL_FLAG(std::string, archive, "", "A torch.jit.save file to register.");
ABSL_FLAG(bool, synthetic, false,
          "Take features, labels and normalization from the built-in synthetic task.");
ABSL_FLAG(int, synthetic_window, 0, "Window length of the synthetic task (conv1d).");
ABSL_FLAG(uint64_t, synthetic_seed, 1, "Seed of the synthetic fleet.");
ABSL_FLAG(int, synthetic_sites, 4, "Sites of the synthetic fleet.");
ABSL_FLAG(std::string, features, "", "Comma-separated feature names in input order.");
ABSL_FLAG(std::string, labels, "", "Comma-separated class names in output order.");
ABSL_FLAG(std::string, normalize_csv, "",
          "A CSV sample of the data: feature names come from its header and normalization "
          "statistics from its rows.");
ABSL_FLAG(std::string, label_column, "label", "The label column of --normalize_csv.");
ABSL_FLAG(std::string, hidden, "",
          "Hidden widths of a built-in; empty: mlp 64,32 and conv1d 16,32 (channels, dense).");
ABSL_FLAG(uint64_t, seed, 0, "Seed for a built-in's initial weights or a job's selection.");
ABSL_FLAG(std::string, description, "", "Model description.");
ABSL_FLAG(std::string, reason, "", "Why: recorded with the version or job.");
// jobs
ABSL_FLAG(std::string, model, "", "Model name for jobs, deploy and export.");
ABSL_FLAG(int64_t, version, 0, "Model version (0 = latest).");
ABSL_FLAG(int, rounds, 10, "Rounds of a training job.");
ABSL_FLAG(int, clients_per_round, 0, "Nodes selected per round (K); 0 = every eligible node.");
ABSL_FLAG(int, min_clients, 1, "Fewest updates a round may aggregate.");
ABSL_FLAG(int64_t, round_timeout_ms, 120000, "Deadline of each round.");
ABSL_FLAG(int64_t, wait_for_clients_ms, 60000, "How long a round waits for min_clients nodes.");
ABSL_FLAG(int, max_round_retries, 1, "Retries of a round that misses its minimum.");
ABSL_FLAG(double, lr, 0.05, "Local learning rate.");
ABSL_FLAG(int, epochs, 1, "Local epochs per round.");
ABSL_FLAG(int, batch_size, 32, "Local batch size.");
ABSL_FLAG(std::string, optimizer, "sgd", "Local optimizer: sgd or adam.");
ABSL_FLAG(double, momentum, 0.9,
          "The edges' SGD momentum, in [0, 1); 0 is plain SGD (FedAvg's local solver as "
          "published). Ignored by adam.");
ABSL_FLAG(double, proximal_mu, 0,
          "FedProx: edges add mu/2 * ||w - w_round||^2 to their local loss (0: off).");
ABSL_FLAG(std::string, aggregation, "fedavg",
          "How a round's updates combine: fedavg, median, trimmed_mean, krum or multi_krum.");
ABSL_FLAG(double, trim_fraction, 0.1, "trimmed_mean: the share cut at each end, in [0, 0.5).");
ABSL_FLAG(int, byzantine, 0, "krum, multi_krum: how many faulty updates to tolerate (f).");
ABSL_FLAG(int, multi_krum, 0, "multi_krum: how many of the best-scored updates to average (m).");
ABSL_FLAG(double, clip_norm, 0, "Clip each update to this L2 norm before aggregating (0: off).");
ABSL_FLAG(double, max_update_norm, 0,
          "The job's bound on an update's L2 norm (0: the coordinator's --max_update_norm).");
ABSL_FLAG(std::string, over_norm, "reject",
          "What happens to an update above the bound: reject (refused) or clip (scaled to it).");
ABSL_FLAG(std::string, server_optimizer, "none",
          "How the aggregate moves the model: none, fedadam, fedyogi or fedadagrad.");
ABSL_FLAG(double, server_lr, 0.01, "Server learning rate of fedadam, fedyogi and fedadagrad.");
ABSL_FLAG(double, server_beta1, 0.9, "First-moment decay of the adaptive server optimizers.");
ABSL_FLAG(double, server_beta2, 0.99, "Second-moment decay of fedadam and fedyogi.");
ABSL_FLAG(double, server_tau, 1e-3, "Adaptivity of the adaptive server optimizers.");
ABSL_FLAG(double, fraction, 0, "Share of the eligible nodes asked per round (0: use K).");
ABSL_FLAG(std::string, cohort, "", "Only nodes labelled cohort=<this>.");
ABSL_FLAG(int, min_cpu_cores, 0, "Only nodes reporting at least this many cores.");
ABSL_FLAG(int64_t, min_memory_mb, 0, "Only nodes reporting at least this much memory.");
ABSL_FLAG(double, over_selection, 0,
          "Ask K*(1+x) nodes and close the round at K updates (straggler insurance).");
ABSL_FLAG(bool, accept_partial_work, false,
          "Count updates of nodes that ran fewer local epochs to meet the deadline (FedProx).");
ABSL_FLAG(std::string, compression, "f32",
          "How edges encode updates: f32, f16, int8, topk or topk_int8.");
ABSL_FLAG(double, topk_fraction, 0.01, "topk, topk_int8: the share of values sent.");
ABSL_FLAG(int, block_size, 256, "int8, topk_int8: values per quantization scale.");
ABSL_FLAG(bool, async, false,
          "FedBuff: nodes train continuously; the model steps every --buffer_size updates.");
ABSL_FLAG(int, buffer_size, 10, "async: updates per server step.");
ABSL_FLAG(int, concurrency, 0, "async: nodes training at once (0: K, else all eligible).");
ABSL_FLAG(double, staleness_exponent, 0.5, "async: a stale update counts 1/(1+s)^x.");
ABSL_FLAG(int, max_staleness, 20, "async: staler updates are refused.");
ABSL_FLAG(std::string, holdout_csv, "", "Holdout CSV on the coordinator for per-round accuracy.");
ABSL_FLAG(bool, holdout_synthetic, false, "Score rounds on the synthetic task's holdout.");
ABSL_FLAG(std::string, selector, "", "Node label selector, key=value pairs separated by commas.");
ABSL_FLAG(bool, watch, false, "Follow the job and print each round as it completes.");
// export / predict
ABSL_FLAG(std::string, out, "", "Output file for models export.");
ABSL_FLAG(std::string, edge, "127.0.0.1:7080", "host:port of an edge's Inference API.");
ABSL_FLAG(std::string, values, "", "Comma-separated feature values for predict.");
ABSL_FLAG(int, synthetic_sample, -1,
          "predict: score row N of the synthetic task's fleet-wide holdout instead of --values, "
          "and show its true label.");

namespace fedge::cli {
namespace {

constexpr char kUsageText[] =
    "fedgectl: operate a fedge cloud (a client of its Admin API, --admin=HOST:PORT).\n\n"
    "Models and the registry:\n"
    "  models register --name=N (--builtin=mlp|conv1d | --archive=FILE)\n"
    "                  [--synthetic | --normalize_csv=FILE | --features=.. --labels=..]\n"
    "  models list | versions NAME | show NAME [--version=V] | lineage NAME [--version=V]\n"
    "  models policy NAME [--min_accuracy=A] [--max_loss=L] [--max_regression=D]\n"
    "                [--holdout_synthetic | --holdout_csv=PATH] [--federated] [--keep_versions=N]\n"
    "  models validate NAME --version=V        run the gate; the result is stored (the policy\n"
    "                flags above, if given, replace the model's policy for this run)\n"
    "  models promote NAME --version=V [--alias=production] [--force --reason=WHY]\n"
    "  models alias NAME --alias=A (--version=V | --delete_alias)\n"
    "  models tag NAME --version=V --tags=k=v,k2=   (empty value deletes)\n"
    "  models retention NAME [--keep_versions=N]\n"
    "  models audit [NAME] [--limit=N]\n"
    "  models retrain-policy NAME [--drift_quorum_nodes=K | --drift_quorum_fraction=F]\n"
    "                [--schedule_ms=T] [--min_new_samples=N] [--cooldown_ms=C] [--rounds=R ...]\n"
    "                [--auto_deploy --waves=.. --soak_ms=..] [--enable=false]\n"
    "  models retrain NAME [--reason=WHY]           start retraining now (manual trigger)\n"
    "  models export NAME [--version=V] --out=FILE   (opens with torch.jit.load)\n"
    "Training:\n"
    "  jobs start --model=N [--rounds=10 --clients_per_round=K --min_clients=M ...] [--watch]\n"
    "             local training: [--lr=0.05 --epochs=1 --batch_size=32 --optimizer=sgd|adam\n"
    "             --momentum=0.9]\n"
    "             strategy: [--proximal_mu=MU] [--aggregation=fedavg|median|trimmed_mean|krum|\n"
    "             multi_krum --byzantine=F --multi_krum=M --trim_fraction=T] [--clip_norm=C]\n"
    "             [--max_update_norm=B --over_norm=reject|clip]\n"
    "             [--server_optimizer=none|fedadam|fedyogi|fedadagrad --server_lr=LR]\n"
    "             selection: [--fraction=F] [--cohort=C] [--min_cpu_cores=N] [--min_memory_mb=MB]\n"
    "             [--over_selection=X] [--accept_partial_work]\n"
    "             async (FedBuff): [--async --buffer_size=K --concurrency=N --max_staleness=S]\n"
    "             compression: [--compression=f32|f16|int8|topk|topk_int8 --topk_fraction=F]\n"
    "  jobs list | status ID | watch ID | cancel ID [--reason=WHY]\n"
    "Rollouts:\n"
    "  deploy create --model=N [--version=V] [--selector=k=v] [--waves=0.25,0.5,1]\n"
    "                [--soak_ms=MS] [--min_feedback_accuracy=A --min_feedback=N]\n"
    "                [--max_error_rate=R] [--max_p99_ms=MS] [--watch]\n"
    "  deploy list | status ID [--watch] | pause ID | resume ID | rollback ID [--reason=WHY]\n"
    "Fleet and events:\n"
    "  nodes list\n"
    "  nodes token create [--uses=1] [--ttl_h=24] [--node_labels=k=v,..] [--description=..]\n"
    "                  prints the token once; an edge enrolls with fedge-edge --enroll_token\n"
    "  nodes token list | token revoke ID\n"
    "  nodes access                                  enrollment and access of every node\n"
    "  nodes disable ID | enable ID | revoke ID [--reason=WHY]   (revoking is final)\n"
    "  events watch [--after_id=N] [--types=deployment.,job.]   (follows until Ctrl-C)\n"
    "  events list [--after_id=N] [--types=..] [--limit=N]\n"
    "  events deliveries [--limit=N]                 the webhook delivery log\n"
    "  predict --edge=HOST:PORT (--values=1.0,2.0,... | --synthetic_sample=N)\n"
    "Access (when fedge-cloud runs with --admin_tokens_file):\n"
    "  tokens create --name=NAME --role=viewer|operator|admin   (offline: prints the secret\n"
    "                once and the line for the tokens file)\n"
    "  Every command sends --token, or else $FEDGE_TOKEN, as `authorization: Bearer <token>`.\n"
    "TLS: --ca_file (or $FEDGE_CA_FILE) trusts the coordinator; --insecure for a plaintext one.\n\n"
    "Output: tables for people, --output=json for scripts. Exit codes: 0 done, 1 the cloud\n"
    "refused or the job/deployment failed, 2 the command line is wrong. Every flag can also\n"
    "come from --flagfile=FILE (one --flag=value per line).\n";

// --- tokens ---------------------------------------------------------------------------------

// Needs no server: the secret is printed once and only its hash goes into the tokens file.
int TokensCreate() {
  const std::string name = absl::GetFlag(FLAGS_name);
  if (name.empty()) return Usage("tokens create needs --name=NAME (who the token is for)");
  if (absl::Status st = fedge::net::ValidateNodeId(name); !st.ok()) {
    return Usage(absl::StrCat("--name='", name,
                              "' is invalid: use 1-64 characters [A-Za-z0-9._-], starting with "
                              "a letter or digit"));
  }
  auto role = fedge::auth::ParseRole(absl::GetFlag(FLAGS_role));
  if (!role.ok()) {
    return Usage(absl::StrCat(
        "tokens create needs --role: ",
        absl::GetFlag(FLAGS_role).empty() ? "missing" : std::string(role.status().message()),
        " (viewer reads, operator runs jobs and rollouts, admin also "
        "promotes and sets policies)"));
  }
  auto secret = fedge::auth::GenerateSecret();
  if (!secret.ok()) return Fail(std::string(secret.status().message()));
  const std::string line = fedge::auth::TokenLine(name, *role, *secret);
  if (Json()) {
    std::cout << "{\n  \"name\": \"" << name << "\",\n  \"role\": \""
              << fedge::auth::RoleName(*role) << "\",\n  \"secret\": \"" << *secret
              << "\",\n  \"line\": \"" << line << "\"\n}\n";
    return kOk;
  }
  std::cout << "secret: " << *secret << "\n"
            << "line:   " << line << "\n\n"
            << "Give the secret to " << name << " (fedgectl --token or FEDGE_TOKEN); it is shown\n"
            << "only now. Append the line to the file of fedge-cloud --admin_tokens_file; the\n"
            << "cloud re-reads it within a second. Delete the line to revoke the token.\n";
  return kOk;
}

// --- models ---------------------------------------------------------------------------------

int ModelsRegister() {
  fedge::v1::RegisterModelHeader header;
  header.set_name(absl::GetFlag(FLAGS_name));
  if (header.name().empty()) return Fail("models register needs --name");
  header.set_description(absl::GetFlag(FLAGS_description));
  header.set_reason(absl::GetFlag(FLAGS_reason));
  fedge::v1::ModelContract* contract = header.mutable_contract();
  if (absl::GetFlag(FLAGS_synthetic)) {
    fedge::data::SyntheticOptions syn;
    syn.seed = absl::GetFlag(FLAGS_synthetic_seed);
    syn.num_sites = absl::GetFlag(FLAGS_synthetic_sites);
    syn.window = absl::GetFlag(FLAGS_synthetic_window);
    for (const auto& f : fedge::data::SyntheticFeatureNames(syn)) contract->add_feature_names(f);
    for (const auto& l : fedge::data::SyntheticLabels()) contract->add_labels(l);
    contract->set_window(syn.window);
    // Fleet-wide statistics: the holdout is drawn from every site equally.
    auto stats = fedge::data::ComputeStats(fedge::data::GenerateHoldout(syn, 4000));
    contract->mutable_normalization()->mutable_mean()->Add(stats.mean.begin(), stats.mean.end());
    contract->mutable_normalization()->mutable_std()->Add(stats.std.begin(), stats.std.end());
  } else if (!absl::GetFlag(FLAGS_normalize_csv).empty()) {
    fedge::data::CsvOptions csv;
    csv.label_column = absl::GetFlag(FLAGS_label_column);
    csv.label_names = SplitList(absl::GetFlag(FLAGS_labels));
    auto data = fedge::data::ReadCsv(absl::GetFlag(FLAGS_normalize_csv), csv);
    if (!data.ok()) return Fail(std::string(data.status().message()));
    for (const auto& f : data->feature_names) contract->add_feature_names(f);
    auto stats = fedge::data::ComputeStats(*data);
    contract->mutable_normalization()->mutable_mean()->Add(stats.mean.begin(), stats.mean.end());
    contract->mutable_normalization()->mutable_std()->Add(stats.std.begin(), stats.std.end());
    if (csv.label_names.empty()) {
      int64_t max_label = 0;
      for (int64_t l : data->labels) max_label = std::max(max_label, l);
      for (int64_t l = 0; l <= max_label; ++l) contract->add_labels(absl::StrCat(l));
    }
  }
  if (!absl::GetFlag(FLAGS_features).empty()) {
    contract->clear_feature_names();
    for (const auto& f : SplitList(absl::GetFlag(FLAGS_features))) contract->add_feature_names(f);
  }
  if (!absl::GetFlag(FLAGS_labels).empty()) {
    contract->clear_labels();
    for (const auto& l : SplitList(absl::GetFlag(FLAGS_labels))) contract->add_labels(l);
  }
  if (absl::GetFlag(FLAGS_synthetic_window) > 0) {
    contract->set_window(absl::GetFlag(FLAGS_synthetic_window));
  }
  std::string archive;
  if (!absl::GetFlag(FLAGS_builtin).empty()) {
    header.mutable_builtin()->set_architecture(absl::GetFlag(FLAGS_builtin));
    header.mutable_builtin()->set_seed(absl::GetFlag(FLAGS_seed));
    for (const auto& h : SplitList(absl::GetFlag(FLAGS_hidden))) {
      int v = 0;
      if (!absl::SimpleAtoi(h, &v)) return Fail(absl::StrCat("--hidden entry '", h, "' is not a number"));
      header.mutable_builtin()->add_hidden(v);
    }
  } else if (!absl::GetFlag(FLAGS_archive).empty()) {
    std::ifstream in(absl::GetFlag(FLAGS_archive), std::ios::binary);
    if (!in) return Fail(absl::StrCat("cannot read --archive ", absl::GetFlag(FLAGS_archive)));
    std::ostringstream ss;
    ss << in.rdbuf();
    archive = ss.str();
    header.set_archive_size(static_cast<int64_t>(archive.size()));
    header.set_archive_sha256(fedge::Sha256Hex(archive));
  } else {
    return Fail("models register needs --builtin=mlp|conv1d or --archive=FILE");
  }
  auto stub = Stub();
  auto ctx = Context();
  fedge::v1::Version version;
  auto writer = stub->RegisterModel(ctx.get(), &version);
  fedge::v1::RegisterModelRequest req;
  *req.mutable_header() = header;
  bool ok = writer->Write(req);
  for (size_t off = 0; ok && off < archive.size(); off += 1 << 20) {
    fedge::v1::RegisterModelRequest chunk;
    chunk.mutable_chunk()->set_offset(static_cast<int64_t>(off));
    chunk.mutable_chunk()->set_data(archive.substr(off, 1 << 20));
    ok = writer->Write(chunk);
  }
  writer->WritesDone();
  grpc::Status st = writer->Finish();
  if (!st.ok()) return FailRpc("models register", st);
  if (Json()) {
    PrintJson(version);
  } else {
    std::cout << "registered " << version.model() << " v" << version.version() << " ("
              << version.contract().architecture() << ", " << version.size_bytes()
              << " bytes, sha256 " << version.sha256().substr(0, 12) << ")\n";
  }
  return 0;
}

int ModelsList() {
  fedge::v1::ListModelsResponse resp;
  if (!CallAdmin("models list", &Admin::Stub::ListModels, fedge::v1::ListModelsRequest(), &resp)) return 1;
  if (Json()) return PrintJson(resp), 0;
  absl::PrintF("%-24s %8s %-20s %s\n", "MODEL", "LATEST", "CREATED", "DESCRIPTION");
  for (const auto& m : resp.models()) {
    absl::PrintF("%-24s %8d %-20s %s\n", m.name(), m.latest_version(), Time(m.created_unix_ms()),
                 m.description());
  }
  return 0;
}

int ModelsVersions(const std::string& model) {
  fedge::v1::ListVersionsRequest req;
  req.set_model(model);
  fedge::v1::ListVersionsResponse resp;
  if (!CallAdminAllPages("models versions", &Admin::Stub::ListVersions, req, &resp,
                         [](fedge::v1::ListVersionsResponse* r) { return r->mutable_versions(); })) {
    return 1;
  }
  if (Json()) return PrintJson(resp), 0;
  absl::PrintF("%-8s %-7s %-14s %-26s %-8s %-20s %s\n", "VERSION", "PARENT", "SHA256", "JOB",
               "VAL_ACC", "CREATED", "REASON");
  for (const auto& v : resp.versions()) {
    auto acc = v.metrics().find("val_accuracy");
    absl::PrintF("%-8d %-7s %-14s %-26s %-8s %-20s %s\n", v.version(),
                 v.parent_version() ? absl::StrCat(v.parent_version()) : "-",
                 v.sha256().substr(0, 12), v.job_id().empty() ? "-" : v.job_id(),
                 acc == v.metrics().end() ? "-" : absl::StrFormat("%.3f", acc->second),
                 Time(v.created_unix_ms()), v.reason());
  }
  return 0;
}

int ModelsShow(const std::string& model) {
  fedge::v1::GetVersionRequest req;
  req.set_model(model);
  req.set_version(absl::GetFlag(FLAGS_version));
  fedge::v1::Version v;
  if (!CallAdmin("models show", &Admin::Stub::GetVersion, req, &v)) return 1;
  if (Json()) return PrintJson(v), 0;
  std::cout << v.model() << " v" << v.version() << "\n"
            << "  sha256:       " << v.sha256() << " (" << v.size_bytes() << " bytes)\n"
            << "  parent:       " << (v.parent_version() ? absl::StrCat("v", v.parent_version()) : "-") << "\n"
            << "  architecture: " << v.contract().architecture() << ", "
            << v.contract().feature_names_size() << " features -> "
            << absl::StrJoin(v.contract().labels(), ",") << "\n"
            << "  schema:       " << v.schema_hash().substr(0, 16) << " ("
            << v.schema().tensors_size() << " tensors)\n"
            << "  job:          " << (v.job_id().empty() ? "-" : v.job_id()) << " round "
            << v.round() << " (" << (v.strategy().empty() ? "-" : v.strategy()) << ")\n"
            << "  created:      " << Time(v.created_unix_ms()) << " by " << v.creator() << "\n"
            << "  reason:       " << v.reason() << "\n";
  for (const auto& p : v.participants()) {
    std::cout << "  participant:  " << p.node_id() << " (" << p.num_samples() << " samples)\n";
  }
  for (const auto& [k, val] : v.metrics()) std::cout << "  metric:       " << k << " = " << val << "\n";
  return 0;
}

int ModelsExport(const std::string& model) {
  const std::string out_path = absl::GetFlag(FLAGS_out);
  if (out_path.empty()) return Fail("models export needs --out=FILE");
  auto stub = Stub();
  std::string bytes;
  std::string sha;
  int64_t total = -1;
  for (int attempt = 0; attempt < 5; ++attempt) {
    auto ctx = Context();
    fedge::v1::GetVersionRequest req;
    req.set_model(model);
    req.set_version(absl::GetFlag(FLAGS_version));
    req.set_offset(static_cast<int64_t>(bytes.size()));
    auto reader = stub->DownloadVersion(ctx.get(), req);
    fedge::v1::Chunk chunk;
    while (reader->Read(&chunk)) {
      if (chunk.total_size() > 0) {
        total = chunk.total_size();
        sha = chunk.sha256();
      }
      bytes.append(chunk.data());
    }
    grpc::Status st = reader->Finish();
    if (st.ok()) break;
    if (st.error_code() != grpc::StatusCode::UNAVAILABLE) return FailRpc("models export", st);
  }
  if (static_cast<int64_t>(bytes.size()) != total || fedge::Sha256Hex(bytes) != sha) {
    return Fail("download incomplete or corrupted; run the export again");
  }
  std::ofstream out(out_path, std::ios::binary | std::ios::trunc);
  out << bytes;
  if (!out.flush()) return Fail(absl::StrCat("cannot write ", out_path));
  std::cout << "wrote " << out_path << " (" << bytes.size() << " bytes, sha256 "
            << sha.substr(0, 12) << "); load it with torch.jit.load\n";
  return 0;
}

// --- jobs -------------------------------------------------------------------------------------

void PrintRoundHeader() {
  absl::PrintF("%5s %5s %8s %10s %8s %8s %9s %7s\n", "round", "nodes", "samples", "train_loss",
               "val_acc", "MB_up", "MB_down", "secs");
}

void PrintRound(const fedge::v1::RoundInfo& r) {
  if (r.state() != "done") {
    absl::PrintF("%5d %5d  %s (attempt %d): %s\n", r.round(), r.participants(), r.state(),
                 r.attempt(), r.reason());
  } else {
    absl::PrintF("%5d %5d %8d %10.4f %8.4f %8.2f %9.2f %7.1f\n", r.round(), r.participants(),
                 r.samples(), r.train_loss(), r.val_accuracy(), r.bytes_up() / 1e6,
                 r.bytes_down() / 1e6, r.seconds());
  }
  std::fflush(stdout);
}

// Follows a job: one table row per finished round and, on a terminal, a live progress bar for
// the round in flight. Exit code 0 if the job succeeds, 1 if it fails or is cancelled.
int Watch(Admin::Stub* stub, const std::string& id) {
  size_t printed = 0;
  bool header = false;
  const bool tty = isatty(STDOUT_FILENO) != 0 && !Json();
  bool bar_shown = false;
  auto clear_bar = [&] {
    if (bar_shown) std::cout << "\r\033[K" << std::flush;
    bar_shown = false;
  };
  while (true) {
    auto ctx = Context();
    fedge::v1::GetJobRequest req;
    req.set_id(id);
    fedge::v1::Job job;
    grpc::Status st = stub->GetJob(ctx.get(), req, &job);
    if (!st.ok()) return FailRpc("jobs status", st);
    if (!header && job.state() != fedge::v1::JOB_PENDING) {
      PrintRoundHeader();
      absl::PrintF("%5d %5s %8s %10s %8.4f %8s %9s %7s\n", 0, "-", "-", "-",
                   job.initial_val_accuracy(), "-", "-", "-");
      header = true;
    }
    // Rows print once their round is over (done, retrying, failed or interrupted).
    while (printed < static_cast<size_t>(job.rounds_size()) &&
           job.rounds(static_cast<int>(printed)).state() != "training") {
      clear_bar();
      PrintRound(job.rounds(static_cast<int>(printed)));
      ++printed;
    }
    if (job.state() == fedge::v1::JOB_SUCCEEDED) {
      clear_bar();
      std::cout << "job " << id << " succeeded: " << job.spec().model() << " v"
                << job.result_version() << "\n";
      return kOk;
    }
    if (job.state() == fedge::v1::JOB_FAILED || job.state() == fedge::v1::JOB_CANCELLED) {
      clear_bar();
      std::cout << "job " << id << " " << (job.state() == fedge::v1::JOB_FAILED ? "failed" : "cancelled")
                << ": " << job.error() << "\n";
      return kFailed;
    }
    if (tty && job.rounds_size() > 0 && job.rounds(job.rounds_size() - 1).state() == "training") {
      const auto& r = job.rounds(job.rounds_size() - 1);
      const int total = std::max(1, job.spec().rounds());
      const int width = 30;
      const int filled = width * job.completed_rounds() / total;
      const double secs = (absl::ToUnixMillis(absl::Now()) - job.updated_unix_ms()) / 1000.0;
      std::cout << "\r\033[K[" << std::string(static_cast<size_t>(filled), '#')
                << std::string(static_cast<size_t>(width - filled), '.') << "] round " << r.round()
                << "/" << total << ": " << r.participants() << " node(s) training, "
                << absl::StrFormat("%.1f", std::max(0.0, secs)) << " s" << std::flush;
      bar_shown = true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
}

int JobsStart() {
  fedge::v1::StartJobRequest req;
  fedge::v1::JobSpec* s = req.mutable_spec();
  s->set_model(absl::GetFlag(FLAGS_model));
  if (s->model().empty()) return Fail("jobs start needs --model");
  s->set_base_version(absl::GetFlag(FLAGS_version));
  s->set_rounds(absl::GetFlag(FLAGS_rounds));
  s->set_clients_per_round(absl::GetFlag(FLAGS_clients_per_round));
  s->set_min_clients(absl::GetFlag(FLAGS_min_clients));
  s->set_round_timeout_ms(absl::GetFlag(FLAGS_round_timeout_ms));
  s->set_wait_for_clients_ms(absl::GetFlag(FLAGS_wait_for_clients_ms));
  s->set_max_round_retries(absl::GetFlag(FLAGS_max_round_retries));
  s->set_learning_rate(absl::GetFlag(FLAGS_lr));
  s->set_local_epochs(absl::GetFlag(FLAGS_epochs));
  s->set_batch_size(absl::GetFlag(FLAGS_batch_size));
  s->set_optimizer(absl::GetFlag(FLAGS_optimizer));
  s->set_proximal_mu(absl::GetFlag(FLAGS_proximal_mu));
  s->set_momentum(absl::GetFlag(FLAGS_momentum));
  FillStrategy(s);
  s->set_seed(absl::GetFlag(FLAGS_seed));
  s->set_reason(absl::GetFlag(FLAGS_reason));
  if (!ParseSelector(absl::GetFlag(FLAGS_selector), s->mutable_selector())) return Fail("--selector must be key=value,...");
  if (!absl::GetFlag(FLAGS_holdout_csv).empty()) {
    s->mutable_holdout()->set_csv_path(absl::GetFlag(FLAGS_holdout_csv));
    s->mutable_holdout()->set_label_column(absl::GetFlag(FLAGS_label_column));
  } else if (absl::GetFlag(FLAGS_holdout_synthetic)) {
    auto* syn = s->mutable_holdout()->mutable_synthetic();
    syn->set_seed(absl::GetFlag(FLAGS_synthetic_seed));
    syn->set_num_sites(absl::GetFlag(FLAGS_synthetic_sites));
    syn->set_window(absl::GetFlag(FLAGS_synthetic_window));
  }
  fedge::v1::Job job;
  if (!CallAdmin("jobs start", &Admin::Stub::StartJob, req, &job)) return 1;
  if (Json()) {
    PrintJson(job);
  } else {
    std::cout << "started " << job.id() << " (" << job.spec().rounds() << " rounds of "
              << job.spec().model() << " v" << job.spec().base_version() << ")\n";
  }
  if (absl::GetFlag(FLAGS_watch)) return Watch(Stub().get(), job.id());
  return 0;
}

int JobsStatus(const std::string& id) {
  if (absl::GetFlag(FLAGS_watch)) return Watch(Stub().get(), id);
  fedge::v1::GetJobRequest req;
  req.set_id(id);
  fedge::v1::Job job;
  if (!CallAdmin("jobs status", &Admin::Stub::GetJob, req, &job)) return 1;
  if (Json()) return PrintJson(job), 0;
  std::cout << job.id() << ": " << fedge::v1::JobState_Name(job.state()) << ", "
            << job.completed_rounds() << "/" << job.spec().rounds() << " rounds"
            << (job.error().empty() ? "" : ", error: " + job.error()) << "\n";
  if (!job.strategy().empty()) {
    std::cout << "strategy: " << (job.spec().async().enabled() ? "fedbuff, " : "")
              << job.strategy() << "\n";
  }
  PrintRoundHeader();
  for (const auto& r : job.rounds()) PrintRound(r);
  return 0;
}

int JobsList() {
  fedge::v1::ListJobsResponse resp;
  if (!CallAdminAllPages("jobs list", &Admin::Stub::ListJobs, fedge::v1::ListJobsRequest(), &resp,
                         [](fedge::v1::ListJobsResponse* r) { return r->mutable_jobs(); })) {
    return 1;
  }
  if (Json()) return PrintJson(resp), 0;
  absl::PrintF("%-26s %-16s %-14s %-9s %-20s\n", "JOB", "MODEL", "STATE", "ROUNDS", "CREATED");
  for (const auto& j : resp.jobs()) {
    absl::PrintF("%-26s %-16s %-14s %-9s %-20s\n", j.id(), j.spec().model(),
                 fedge::v1::JobState_Name(j.state()),
                 absl::StrCat(j.completed_rounds(), "/", j.spec().rounds()),
                 Time(j.created_unix_ms()));
  }
  return 0;
}

// --- nodes, deploy, predict -------------------------------------------------------------------

int NodesList() {
  fedge::v1::ListNodesResponse resp;
  if (!CallAdminAllPages("nodes list", &Admin::Stub::ListNodes, fedge::v1::ListNodesRequest(),
                         &resp,
                         [](fedge::v1::ListNodesResponse* r) { return r->mutable_nodes(); })) {
    return kFailed;
  }
  if (Json()) return PrintJson(resp), kOk;
  absl::PrintF("%-16s %-10s %-6s %-20s %-22s %-22s %s\n", "NODE", "CONNECTED", "ALIVE",
               "LAST_SEEN", "ACTIVE", "DESIRED", "LABELS");
  auto versions = [](const google::protobuf::Map<std::string, fedge::v1::VersionRef>& m) {
    std::vector<std::string> out;
    for (const auto& [model, ref] : m) out.push_back(absl::StrCat(model, ":v", ref.version()));
    std::sort(out.begin(), out.end());
    return out.empty() ? std::string("-") : absl::StrJoin(out, ",");
  };
  for (const auto& n : resp.nodes()) {
    std::vector<std::string> labels;
    for (const auto& [k, v] : n.labels()) labels.push_back(absl::StrCat(k, "=", v));
    std::sort(labels.begin(), labels.end());
    absl::PrintF("%-16s %-10s %-6s %-20s %-22s %-22s %s\n", n.node_id(),
                 n.connected() ? "yes" : "no", n.alive() ? "yes" : "no",
                 Time(n.last_seen_unix_ms()), versions(n.active_versions()),
                 versions(n.desired_versions()), absl::StrJoin(labels, ","));
  }
  return kOk;
}

void PrintToken(const fedge::v1::EnrollmentToken& t) {
  std::vector<std::string> labels;
  for (const auto& [k, v] : t.labels()) labels.push_back(absl::StrCat(k, "=", v));
  std::sort(labels.begin(), labels.end());
  absl::PrintF("%-14s %5d/%-5d %-20s %-8s %-20s %s\n", t.id(), t.used(), t.uses(),
               Time(t.expires_unix_ms()), t.revoked() ? "revoked" : "-",
               labels.empty() ? "-" : absl::StrJoin(labels, ","),
               t.node_ids().empty() ? "-" : absl::StrJoin(t.node_ids(), ","));
}

int NodesTokenCreate() {
  fedge::v1::CreateEnrollmentTokenRequest req;
  if (absl::GetFlag(FLAGS_uses) < 1) return Usage("--uses must be at least 1");
  const double ttl_h = absl::GetFlag(FLAGS_ttl_h);
  if (!(ttl_h > 0) || ttl_h > 24 * 365) return Usage("--ttl_h must be in (0, 8760]");
  req.set_uses(absl::GetFlag(FLAGS_uses));
  req.set_ttl_seconds(static_cast<int64_t>(ttl_h * 3600));
  req.set_description(absl::GetFlag(FLAGS_description));
  if (!ParseSelector(absl::GetFlag(FLAGS_node_labels), req.mutable_labels())) {
    return Usage("--node_labels must be key=value pairs separated by commas");
  }
  fedge::v1::EnrollmentToken resp;
  if (!CallAdmin("nodes token create", &Admin::Stub::CreateEnrollmentToken, req, &resp)) {
    return kFailed;
  }
  if (Json()) return PrintJson(resp), kOk;
  std::cout << "token:   " << resp.secret() << "\n"
            << "id:      " << resp.id() << " (" << resp.uses() << " use(s), expires "
            << Time(resp.expires_unix_ms()) << ")\n\n"
            << "It is shown only now. Start each new edge once with\n"
            << "  FEDGE_ENROLL_TOKEN=<token> fedge-edge --node_id=ID --ca_file=CA.crt ...\n"
            << "Revoke it early with `fedgectl nodes token revoke " << resp.id() << "`.\n";
  return kOk;
}

int NodesTokenList() {
  fedge::v1::ListEnrollmentTokensResponse resp;
  if (!CallAdmin("nodes token list", &Admin::Stub::ListEnrollmentTokens,
                 fedge::v1::ListEnrollmentTokensRequest(), &resp)) {
    return kFailed;
  }
  if (Json()) return PrintJson(resp), kOk;
  absl::PrintF("%-14s %11s %-20s %-8s %-20s %s\n", "ID", "USED/USES", "EXPIRES", "REVOKED",
               "LABELS", "NODES");
  for (const auto& t : resp.tokens()) PrintToken(t);
  return kOk;
}

int NodesTokenRevoke(const std::string& id) {
  fedge::v1::RevokeEnrollmentTokenRequest req;
  req.set_id(id);
  req.set_reason(absl::GetFlag(FLAGS_reason));
  fedge::v1::EnrollmentToken resp;
  if (!CallAdmin("nodes token revoke", &Admin::Stub::RevokeEnrollmentToken, req, &resp)) {
    return kFailed;
  }
  if (Json()) return PrintJson(resp), kOk;
  std::cout << "enrollment token " << resp.id() << " revoked\n";
  return kOk;
}

const char* AccessName(fedge::v1::NodeAccessState state) {
  switch (state) {
    case fedge::v1::NODE_ENABLED:
      return "enabled";
    case fedge::v1::NODE_DISABLED:
      return "disabled";
    case fedge::v1::NODE_REVOKED:
      return "revoked";
    default:
      return "-";
  }
}

void PrintAccess(const fedge::v1::NodeAccess& n) {
  absl::PrintF("%-16s %-9s %-14s %-20s %-20s %s\n", n.node_id(), AccessName(n.state()),
               n.token_id().empty() ? "-" : n.token_id(), Time(n.certificate_not_after_unix_ms()),
               n.changed_by(), n.reason());
}

int NodesAccess() {
  fedge::v1::ListNodeAccessResponse resp;
  if (!CallAdminAllPages("nodes access", &Admin::Stub::ListNodeAccess,
                         fedge::v1::ListNodeAccessRequest(), &resp,
                         [](fedge::v1::ListNodeAccessResponse* r) { return r->mutable_nodes(); })) {
    return kFailed;
  }
  if (Json()) return PrintJson(resp), kOk;
  absl::PrintF("%-16s %-9s %-14s %-20s %-20s %s\n", "NODE", "ACCESS", "TOKEN", "CERT_EXPIRES",
               "CHANGED_BY", "REASON");
  for (const auto& n : resp.nodes()) PrintAccess(n);
  return kOk;
}

int NodesSetAccess(const std::string& action, const std::string& node_id) {
  fedge::v1::NodeAccess resp;
  bool ok;
  if (action == "revoke") {
    fedge::v1::RevokeNodeRequest req;
    req.set_node_id(node_id);
    req.set_reason(absl::GetFlag(FLAGS_reason));
    ok = CallAdmin("nodes revoke", &Admin::Stub::RevokeNode, req, &resp);
  } else {
    fedge::v1::SetNodeAccessRequest req;
    req.set_node_id(node_id);
    req.set_state(action == "enable" ? fedge::v1::NODE_ENABLED : fedge::v1::NODE_DISABLED);
    req.set_reason(absl::GetFlag(FLAGS_reason));
    ok = CallAdmin(action == "enable" ? "nodes enable" : "nodes disable",
                   &Admin::Stub::SetNodeAccess, req, &resp);
  }
  if (!ok) return kFailed;
  if (Json()) return PrintJson(resp), kOk;
  std::cout << "node " << resp.node_id() << " is " << AccessName(resp.state()) << "\n";
  return kOk;
}

int Predict() {
  fedge::v1::PredictRequest req;
  req.set_model(absl::GetFlag(FLAGS_model));
  std::string truth;
  if (absl::GetFlag(FLAGS_synthetic_sample) >= 0) {
    fedge::data::SyntheticOptions syn;
    syn.seed = absl::GetFlag(FLAGS_synthetic_seed);
    syn.num_sites = absl::GetFlag(FLAGS_synthetic_sites);
    syn.window = absl::GetFlag(FLAGS_synthetic_window);
    const int64_t row = absl::GetFlag(FLAGS_synthetic_sample);
    auto holdout = fedge::data::GenerateHoldout(syn, row + 1);
    const int64_t f = holdout.num_features();
    req.mutable_instance()->mutable_features()->Add(holdout.features.begin() + row * f,
                                                    holdout.features.begin() + (row + 1) * f);
    truth = fedge::data::SyntheticLabels()[static_cast<size_t>(holdout.labels[row])];
    if (!Json()) {
      std::vector<std::string> shown;
      for (int i = 0; i < f; ++i) {
        shown.push_back(absl::StrFormat("%s=%.2f", holdout.feature_names[i],
                                        req.instance().features(i)));
      }
      std::cout << "input: " << absl::StrJoin(shown, " ") << "\n";
    }
  }
  for (const auto& v : SplitList(absl::GetFlag(FLAGS_values))) {
    float f = 0;
    if (!absl::SimpleAtof(v, &f)) return Fail(absl::StrCat("--values entry '", v, "' is not a number"));
    req.mutable_instance()->add_features(f);
  }
  auto stub = fedge::v1::Inference::NewStub(fedge::net::MakeChannel(absl::GetFlag(FLAGS_edge)));
  // The edge is not the Admin API: it gets no bearer token.
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() +
                    std::chrono::seconds(absl::GetFlag(FLAGS_timeout_s)));
  fedge::v1::PredictResponse resp;
  grpc::Status st = stub->Predict(ctx.get(), req, &resp);
  if (!st.ok()) return FailRpc("predict", st);
  if (Json()) return PrintJson(resp), 0;
  const auto& p = resp.prediction();
  float best = 0;
  for (float prob : p.probabilities()) best = std::max(best, prob);
  std::cout << "prediction: " << p.label_name() << " (class " << p.label() << ", p=" << best
            << ") by " << resp.version().model() << " v" << resp.version().version()
            << (truth.empty() ? "" : absl::StrCat("; true label: ", truth)) << "\n";
  return 0;
}

}  // namespace
}  // namespace fedge::cli

int main(int argc, char** argv) {
  using namespace fedge::cli;  // NOLINT: the command table below
  std::vector<char*> args = fedge::app::ParseFlags(argc, argv, kUsageText);
  std::vector<std::string> a(args.begin() + 1, args.end());
  auto is = [&](std::initializer_list<const char*> words) {
    if (a.size() < words.size()) return false;
    size_t i = 0;
    for (const char* w : words) {
      if (a[i++] != w) return false;
    }
    return true;
  };
  if (is({"models", "register"})) return ModelsRegister();
  if (is({"models", "list"})) return ModelsList();
  if (is({"models", "versions"}) && a.size() == 3) return ModelsVersions(a[2]);
  if (is({"models", "show"}) && a.size() == 3) return ModelsShow(a[2]);
  if (is({"models", "export"}) && a.size() == 3) return ModelsExport(a[2]);
  if (is({"jobs", "start"})) return JobsStart();
  if (is({"jobs", "status"}) && a.size() == 3) return JobsStatus(a[2]);
  if (is({"jobs", "list"})) return JobsList();
  if (is({"nodes", "list"})) return NodesList();
  if (is({"nodes", "token", "create"})) return NodesTokenCreate();
  if (is({"nodes", "token", "list"})) return NodesTokenList();
  if (is({"nodes", "token", "revoke"}) && a.size() == 4) return NodesTokenRevoke(a[3]);
  if (is({"nodes", "access"})) return NodesAccess();
  for (const char* action : {"disable", "enable", "revoke"}) {
    if (is({"nodes", action}) && a.size() == 3) return NodesSetAccess(action, a[2]);
  }
  if (is({"deploy", "create"})) return DeployCreate();
  if (is({"deploy", "list"})) return DeployList();
  if (is({"deploy", "status"}) && a.size() == 3) return DeployStatus(a[2]);
  for (const char* action : {"pause", "resume", "rollback"}) {
    if (is({"deploy", action}) && a.size() == 3) return DeployAction(action, a[2]);
  }
  if (is({"models", "lineage"}) && a.size() == 3) return ModelsLineage(a[2]);
  if (is({"models", "promote"}) && a.size() == 3) return ModelsPromote(a[2]);
  if (is({"models", "alias"}) && a.size() == 3) return ModelsAlias(a[2]);
  if (is({"models", "tag"}) && a.size() == 3) return ModelsTag(a[2]);
  if (is({"models", "policy"}) && a.size() == 3) return ModelsPolicy(a[2]);
  if (is({"models", "validate"}) && a.size() == 3) return ModelsValidate(a[2]);
  if (is({"models", "retention"}) && a.size() == 3) return ModelsRetention(a[2]);
  if (is({"models", "audit"})) return ModelsAudit(a.size() == 3 ? a[2] : "");
  if (is({"models", "retrain-policy"}) && a.size() == 3) return ModelsRetrainPolicy(a[2]);
  if (is({"models", "retrain"}) && a.size() == 3) return ModelsRetrain(a[2]);
  if (is({"jobs", "watch"}) && a.size() == 3) return Watch(Stub().get(), a[2]);
  if (is({"jobs", "cancel"}) && a.size() == 3) return JobsCancel(a[2]);
  if (is({"events", "watch"})) return EventsWatch(true);
  if (is({"events", "list"})) return EventsWatch(false);
  if (is({"events", "deliveries"})) return EventsDeliveries();
  if (is({"predict"})) return Predict();
  if (is({"tokens", "create"}) && a.size() == 2) return TokensCreate();
  std::cerr << kUsageText << "\nRun fedgectl --help for every flag.\n";
  return a.empty() ? kOk : kUsage;
}
