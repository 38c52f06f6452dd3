#include "edge/runtime/runtime.h"

#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/metrics/metrics.h"
#include "common/status/status.h"
#include "common/sync/mutex.h"
#include "common/tensor/sha256.h"
#include "fedge/v1/fleet.pb.h"
#include "glog/logging.h"
#include "google/protobuf/util/json_util.h"

namespace fedge::edge::runtime {
namespace {

namespace fs = std::filesystem;

// Training threads outlive the call that uses them. A thread's first parallel LibTorch
// operation re-applies the process's intra-op thread count, which re-creates LibTorch's shared
// thread pool; with two or more threads, the new pool's worker spins for tens of milliseconds
// on the core that training wants. A new thread per call paid that on every call. Threads are
// kept per nice value, since a thread's priority can be lowered but not raised back: an idle
// one is reused, and a new one starts only when all are busy, so concurrent calls still run
// concurrently.
class TrainingThreads {
 public:
  // Never destroyed: idle threads wait on it until the process exits.
  static TrainingThreads& Get() {
    static TrainingThreads* const threads = new TrainingThreads();
    return *threads;
  }

  // Runs job on an idle thread at `nice` (starting one if there is none) and waits for it.
  void Run(int nice, std::function<void()> job) {
    Worker* worker = nullptr;
    {
      MutexLock lock(&mu_);
      std::vector<Worker*>& idle = idle_[nice];
      if (!idle.empty()) {
        worker = idle.back();
        idle.pop_back();
      }
    }
    if (worker == nullptr) worker = Worker::Start(nice);
    worker->Run(std::move(job));
    MutexLock lock(&mu_);
    idle_[nice].push_back(worker);
  }

 private:
  class Worker {
   public:
    static Worker* Start(int nice) {
      auto* worker = new Worker();
      std::thread([worker, nice] {
        LowerThreadPriority(nice);
        worker->Loop();
      }).detach();
      return worker;
    }

    void Run(std::function<void()> job) {
      MutexLock lock(&mu_);
      job_ = std::move(job);
      done_ = false;
      cv_.SignalAll();
      while (!done_) cv_.Wait(&mu_);
    }

   private:
    void Loop() {
      for (;;) {
        std::function<void()> job;
        {
          MutexLock lock(&mu_);
          while (!job_) cv_.Wait(&mu_);
          job = std::move(job_);
          job_ = nullptr;
        }
        job();
        MutexLock lock(&mu_);
        done_ = true;
        cv_.SignalAll();
      }
    }

    Mutex mu_;
    CondVar cv_;
    std::function<void()> job_ ABSL_GUARDED_BY(mu_);
    bool done_ ABSL_GUARDED_BY(mu_) = false;
  };

  Mutex mu_;
  std::map<int, std::vector<Worker*>> idle_ ABSL_GUARDED_BY(mu_);
};

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

absl::Status WriteFileDurably(const std::string& path, absl::string_view bytes) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    out.flush();
    if (!out) return absl::UnavailableError(absl::StrCat("cannot write ", tmp));
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) return absl::UnavailableError(absl::StrCat("cannot rename ", tmp, ": ", ec.message()));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<v1::ModelContract> ReadContract(const torchlib::Model& model) {
  auto it = model.extra_files().find(torchlib::kContractFile);
  if (it == model.extra_files().end() || it->second.empty()) {
    return absl::InvalidArgumentError(
        "archive holds no fedge contract; register the model through fedge first");
  }
  v1::ModelContract contract;
  auto st = google::protobuf::util::JsonStringToMessage(it->second, &contract);
  if (!st.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("archive's contract is not valid: ", st.message().as_string()));
  }
  return contract;
}

absl::StatusOr<std::unique_ptr<Runtime>> Runtime::Open(Options options) {
  std::error_code ec;
  fs::create_directories(fs::path(options.state_dir) / "cache", ec);
  if (ec) {
    return absl::UnavailableError(
        absl::StrCat("cannot create state dir ", options.state_dir, ": ", ec.message()));
  }
  std::unique_ptr<Runtime> rt(new Runtime(std::move(options)));
  // Serve the last active versions at once, with or without the cloud.
  const std::string active_path = (fs::path(rt->options_.state_dir) / "active.pb").string();
  if (fs::exists(active_path)) {
    FEDGE_ASSIGN_OR_RETURN(std::string bytes, ReadFile(active_path));
    v1::Hello saved;  // active_versions is the one field used
    if (!saved.ParseFromString(bytes)) {
      LOG(ERROR) << active_path << " is corrupted; starting with no active model";
    } else {
      for (const auto& [name, ref] : saved.active_versions()) {
        auto archive = rt->ReadCached(ref.sha256());
        absl::Status st = archive.status();
        if (st.ok()) st = rt->Activate(ref, *archive);
        if (!st.ok()) {
          LOG(ERROR) << "cannot restore " << name << " v" << ref.version() << ": " << st;
        } else {
          LOG(INFO) << "serving " << name << " v" << ref.version() << " from local state";
        }
      }
    }
  }
  return rt;
}

absl::StatusOr<std::shared_ptr<const LoadedModel>> Runtime::Load(
    const v1::VersionRef& ref, absl::string_view archive,
    const std::string& expected_schema_hash) const {
  if (!ref.sha256().empty() && Sha256Hex(archive) != ref.sha256()) {
    return absl::InvalidArgumentError(absl::StrCat("archive for ", ref.model(), " v",
                                                   ref.version(), " fails its sha256 check"));
  }
  auto loaded = std::make_shared<LoadedModel>();
  loaded->ref = ref;
  FEDGE_ASSIGN_OR_RETURN(loaded->model, torchlib::Model::Load(archive));
  if (!expected_schema_hash.empty() && loaded->model->schema().Hash() != expected_schema_hash) {
    return absl::FailedPreconditionError(absl::StrCat(
        ref.model(), " v", ref.version(), " has schema ",
        loaded->model->schema().Hash().substr(0, 12), ", not the deployed ",
        expected_schema_hash.substr(0, 12), "; refusing it"));
  }
  FEDGE_ASSIGN_OR_RETURN(loaded->contract, ReadContract(*loaded->model));
  const auto& norm = loaded->contract.normalization();
  if (norm.mean_size() > 0 && !norm.in_module()) {
    FEDGE_RETURN_IF_ERROR(loaded->model->SetInputNormalization(
        {norm.mean().begin(), norm.mean().end()}, {norm.std().begin(), norm.std().end()}));
  }
  // Warm up: the first forward pass of a TorchScript module is the slow one.
  std::vector<float> zeros(static_cast<size_t>(loaded->contract.feature_names_size()), 0.0f);
  for (int i = 0; i < 2; ++i) {
    FEDGE_RETURN_IF_ERROR(
        loaded->model->Predict(zeros, loaded->contract.feature_names_size()).status());
  }
  return std::shared_ptr<const LoadedModel>(std::move(loaded));
}

absl::StatusOr<bool> Runtime::ActivatePrevious(const v1::VersionRef& ref) {
  MutexLock lock(&mu_);
  auto prev = previous_.find(ref.model());
  if (prev == previous_.end() || prev->second->ref.sha256() != ref.sha256()) return false;
  // Still loaded and warm: the swap is instant.
  std::swap(active_[ref.model()], prev->second);
  FEDGE_RETURN_IF_ERROR(Persist());
  return true;
}

absl::Status Runtime::Activate(const v1::VersionRef& ref, absl::string_view archive,
                               const std::string& expected_schema_hash) {
  FEDGE_ASSIGN_OR_RETURN(auto loaded, Load(ref, archive, expected_schema_hash));
  FEDGE_RETURN_IF_ERROR(WriteCached(Sha256Hex(archive), archive));
  if (options_.on_loaded) options_.on_loaded(*loaded);
  MutexLock lock(&mu_);
  auto it = active_.find(ref.model());
  if (it != active_.end()) previous_[ref.model()] = it->second;
  active_[ref.model()] = std::move(loaded);
  return Persist();
}

absl::Status Runtime::Rollback(const std::string& model) {
  MutexLock lock(&mu_);
  auto it = previous_.find(model);
  if (it == previous_.end()) {
    return absl::FailedPreconditionError(
        absl::StrCat("no previous version of ", model, " is loaded"));
  }
  std::swap(active_[model], it->second);
  return Persist();
}

namespace {

// fedge_edge_model_info{model, version} = 1 for each active version; the series of a version
// that is no longer active is removed.
void PublishActive(const std::map<std::string, v1::VersionRef>& active) {
  static Mutex* mu = new Mutex;
  static auto* current = new std::map<std::string, prometheus::Gauge*>;
  auto& family = metrics::GaugeFamily("fedge_edge_model_info",
                                      "1 for the version each model serves on this edge.");
  MutexLock lock(mu);
  for (auto it = current->begin(); it != current->end();) {
    family.Remove(it->second);
    it = current->erase(it);
  }
  for (const auto& [name, ref] : active) {
    prometheus::Gauge& g =
        family.Add({{"model", name}, {"version", absl::StrCat(ref.version())}});
    g.Set(1);
    (*current)[name] = &g;
  }
}

}  // namespace

absl::Status Runtime::Persist() const {
  std::map<std::string, v1::VersionRef> refs;
  for (const auto& [name, loaded] : active_) refs[name] = loaded->ref;
  PublishActive(refs);
  v1::Hello saved;
  for (const auto& [name, loaded] : active_) {
    (*saved.mutable_active_versions())[name] = loaded->ref;
  }
  return WriteFileDurably((fs::path(options_.state_dir) / "active.pb").string(),
                          saved.SerializeAsString());
}

absl::StatusOr<std::shared_ptr<const LoadedModel>> Runtime::Active(
    const std::string& model) const {
  MutexLock lock(&mu_);
  if (model.empty()) {
    if (active_.empty()) {
      return absl::NotFoundError("no model is active on this edge yet; deploy a version first");
    }
    return active_.begin()->second;
  }
  auto it = active_.find(model);
  if (it == active_.end()) {
    return absl::NotFoundError(absl::StrCat("model '", model, "' is not active on this edge"));
  }
  return it->second;
}

std::map<std::string, v1::VersionRef> Runtime::ActiveVersions() const {
  std::map<std::string, v1::VersionRef> out;
  MutexLock lock(&mu_);
  for (const auto& [name, loaded] : active_) out[name] = loaded->ref;
  return out;
}

std::string Runtime::CachePath(const std::string& sha256) const {
  return (fs::path(options_.state_dir) / "cache" / sha256).string();
}

absl::StatusOr<std::string> Runtime::ReadCached(const std::string& sha256) const {
  if (!IsSha256Hex(sha256)) return absl::InvalidArgumentError("malformed digest");
  FEDGE_ASSIGN_OR_RETURN(std::string bytes, ReadFile(CachePath(sha256)));
  if (Sha256Hex(bytes) != sha256) {
    std::error_code ec;
    fs::remove(CachePath(sha256), ec);
    return absl::DataLossError(absl::StrCat("cached artifact ", sha256.substr(0, 12),
                                            " was corrupted; removed it"));
  }
  return bytes;
}

absl::Status Runtime::WriteCached(const std::string& sha256, absl::string_view bytes) const {
  if (fs::exists(CachePath(sha256))) return absl::OkStatus();
  return WriteFileDurably(CachePath(sha256), bytes);
}

absl::StatusOr<LocalUpdate> Runtime::Train(const v1::TrainTask& task,
                                           absl::string_view base_archive,
                                           const data::Dataset& train, const data::Dataset& holdout,
                                           const TrainLimits& limits) {
  FEDGE_RETURN_IF_ERROR(ValidateTrainLimits(limits));
  // A training thread (never a serving one) at the limits' priority; intra-op threads and
  // pacing are set and undone per call.
  absl::StatusOr<LocalUpdate> result = absl::InternalError("training did not run");
  TrainingThreads::Get().Run(
      limits.nice, [&] { result = TrainHere(task, base_archive, train, holdout, limits); });
  return result;
}

absl::StatusOr<LocalUpdate> Runtime::TrainHere(const v1::TrainTask& task,
                                               absl::string_view base_archive,
                                               const data::Dataset& train,
                                               const data::Dataset& holdout,
                                               const TrainLimits& limits) {
  FEDGE_ASSIGN_OR_RETURN(auto model, torchlib::Model::Load(base_archive));
  const std::string schema_hash = model->schema().Hash();
  if (schema_hash != task.schema_hash()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "base model schema ", schema_hash.substr(0, 12), " differs from the task's ",
        task.schema_hash().substr(0, 12)));
  }
  FEDGE_ASSIGN_OR_RETURN(v1::ModelContract contract, ReadContract(*model));
  if (contract.feature_names_size() != train.num_features()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "local data has ", train.num_features(), " features; model ", task.model(), " takes ",
        contract.feature_names_size()));
  }
  const auto& norm = contract.normalization();
  if (norm.mean_size() > 0 && !norm.in_module()) {
    FEDGE_RETURN_IF_ERROR(model->SetInputNormalization(
        {norm.mean().begin(), norm.mean().end()}, {norm.std().begin(), norm.std().end()}));
  }
  const FlatTensor base = model->Flat();
  torchlib::TrainOptions opt;
  opt.optimizer = task.optimizer() == v1::ADAM ? "adam" : "sgd";
  opt.learning_rate = task.learning_rate();
  opt.epochs = task.epochs();
  opt.batch_size = task.batch_size();
  opt.seed = task.seed();
  opt.proximal_mu = task.proximal_mu();
  if (task.has_momentum()) opt.momentum = task.momentum();
  opt.threads = limits.threads;
  DutyCycle duty(limits.cpu_share);
  if (limits.cpu_share < 1.0) opt.between_batches = [&duty] { duty.Pace(); };
  if (task.accept_partial_work() && task.deadline_unix_ms() > 0) {
    // Stop after the epoch that leaves too little time for one more epoch and the upload.
    const absl::Time deadline = absl::FromUnixMillis(task.deadline_unix_ms());
    const absl::Time started = absl::Now();
    opt.continue_after_epoch = [deadline, started, &limits](int done) {
      const absl::Time now = absl::Now();
      const absl::Duration per_epoch = (now - started) / done;
      return now + per_epoch * 1.2 + limits.upload_margin <= deadline;
    };
  }
  FEDGE_ASSIGN_OR_RETURN(torchlib::TrainResult result, model->Train(train, opt));
  LocalUpdate update;
  update.delta = model->Flat();
  for (size_t i = 0; i < update.delta.size(); ++i) update.delta[i] -= base[i];
  update.schema_hash = schema_hash;
  update.num_samples = result.num_samples;
  update.metrics["train_loss"] = result.train_loss;
  update.metrics["train_seconds"] = result.seconds;
  update.metrics["epochs"] = result.epochs;
  if (holdout.size() > 0) {
    auto eval = model->Evaluate(holdout);
    if (eval.ok()) update.metrics["local_accuracy"] = eval->accuracy;
  }
  return update;
}

}  // namespace fedge::edge::runtime
