#include "cloud/events/event_log.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/random/random.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/metrics/metrics.h"
#include "common/sqlite/sqlite.h"
#include "common/status/status.h"
#include "common/sync/mutex.h"
#include "glog/logging.h"
#include "google/protobuf/util/json_util.h"
#include "httplib.h"

namespace fedge::cloud::events {
namespace {

using sqlite::Stmt;

constexpr char kDbFile[] = "events.db";
constexpr int kDefaultLimit = 100;
// An upper bound on one List/Deliveries answer, so a careless limit cannot load the whole log.
constexpr int kMaxLimit = 10000;
// Events that could not be persisted are kept for watchers in a small in-memory ring.
constexpr size_t kMaxUnpersisted = 1000;

// Forward migrations. Entry i takes the schema from user_version i to i + 1. Never edit an
// entry once released: append a new one.
const std::vector<const char*>& Migrations() {
  static const auto* const kMigrations = new std::vector<const char*>{
      // 1: the initial schema.
      R"sql(
CREATE TABLE events (
  id           INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused, so watchers can resume
  time_unix_ms INTEGER NOT NULL,
  type         TEXT NOT NULL,
  proto        BLOB NOT NULL  -- the full fedge.v1.Event, without its id
);
CREATE INDEX events_by_type ON events(type, id);
CREATE TABLE deliveries (
  id           INTEGER PRIMARY KEY AUTOINCREMENT,
  event_id     INTEGER NOT NULL,
  url          TEXT NOT NULL,
  attempt      INTEGER NOT NULL,
  http_status  INTEGER NOT NULL,  -- 0: no response
  error        TEXT NOT NULL DEFAULT '',
  delivered    INTEGER NOT NULL,
  time_unix_ms INTEGER NOT NULL
);
)sql",
  };
  return *kMigrations;
}

// ---------------------------------------------------------------------------------------------
// Metrics. Every label takes values from a bounded set.

prometheus::Family<prometheus::Counter>& EventsTotal() {
  static auto& family = fedge::metrics::CounterFamily("fedge_cloud_events_total",
                                                      "Lifecycle events appended, by type.");
  return family;
}

prometheus::Family<prometheus::Counter>& DeliveriesTotal() {
  static auto& family = fedge::metrics::CounterFamily(
      "fedge_cloud_webhook_deliveries_total",
      "Webhook delivery outcomes: delivered, failed (gave up after the last attempt) and "
      "retried (an attempt failed and another follows).");
  return family;
}

prometheus::Counter& DroppedTotal() {
  static auto& counter = fedge::metrics::CounterFamily(
                             "fedge_cloud_webhook_dropped_total",
                             "Queued webhook deliveries dropped because a webhook's queue was "
                             "full, or at shutdown.")
                             .Add({});
  return counter;
}

// Event types come from fedge's own code, but keep the label bounded even if a caller strays.
std::string TypeLabel(absl::string_view type) {
  bool ok = !type.empty() && type.size() <= 64;
  for (char c : type) {
    ok = ok && ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_');
  }
  return ok ? std::string(type) : "other";
}

absl::Status MakeDir(const std::string& path) {
  if (::mkdir(path.c_str(), 0755) == 0) return absl::OkStatus();
  if (errno == EEXIST) {
    struct stat st;
    if (::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) return absl::OkStatus();
    return absl::FailedPreconditionError(absl::StrCat(path, " exists and is not a directory"));
  }
  int err = errno;
  // events.db has always reported these as INTERNAL; the shared mapping says UNAVAILABLE.
  if (err == EIO || err == EAGAIN || err == EINTR) {
    return absl::InternalError(absl::StrCat("creating directory ", path, ": ", std::strerror(err)));
  }
  return sqlite::ErrnoStatus(err, absl::StrCat("creating directory ", path));
}

// mkdir -p.
absl::Status MakeDirs(const std::string& path) {
  if (path.empty()) return absl::OkStatus();
  for (size_t pos = path.find('/', 1); pos != std::string::npos; pos = path.find('/', pos + 1)) {
    FEDGE_RETURN_IF_ERROR(MakeDir(path.substr(0, pos)));
  }
  return MakeDir(path);
}

// Cuts an event down to bounded fields, so that no event (and no event stored before these
// bounds existed) can make a list, a watch or a webhook body too large: the message to 2 KiB,
// 64 attributes of 128-byte keys and 512-byte values, and every other string to 256 bytes.
void BoundEvent(v1::Event* e) {
  auto cut = [](std::string* s, size_t max) {
    if (s->size() <= max) return;
    const size_t was = s->size();
    s->resize(max);
    absl::StrAppend(s, "... (", was, " bytes)");
  };
  cut(e->mutable_message(), 2048);
  cut(e->mutable_type(), 256);
  cut(e->mutable_node_id(), 256);
  cut(e->mutable_model(), 256);
  cut(e->mutable_job_id(), 256);
  cut(e->mutable_deployment_id(), 256);
  auto* attrs = e->mutable_attributes();
  bool oversized = attrs->size() > 64;
  for (const auto& [k, v] : *attrs) oversized = oversized || k.size() > 128 || v.size() > 512;
  if (!oversized) return;
  std::map<std::string, std::string> kept;
  for (const auto& [k, v] : *attrs) {
    if (kept.size() >= 64) break;
    std::string key = k.substr(0, 128);
    std::string value = v;
    cut(&value, 512);
    kept.emplace(std::move(key), std::move(value));
  }
  attrs->clear();
  for (auto& [k, v] : kept) (*attrs)[k] = std::move(v);
}

// A list stops adding events past this many bytes; callers page on with after_id.
constexpr size_t kMaxListBytes = 2 << 20;

int ClampLimit(int limit) {
  if (limit <= 0) return kDefaultLimit;
  return std::min(limit, kMaxLimit);
}

// ---------------------------------------------------------------------------------------------
// Webhook URLs.

struct Endpoint {
  std::string url;  // as configured, for logs and the delivery log
  std::string host;
  int port = 80;
  std::string path;  // starts with '/', may carry a query
};

absl::StatusOr<Endpoint> ParseUrl(const std::string& url) {
  auto invalid = [&url](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat("webhook URL \"", absl::CHexEscape(url),
                                                   "\" is invalid: ", why,
                                                   " (expected http://host[:port]/path)"));
  };
  for (char c : url) {
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) {
      return invalid("it contains a space or control character");
    }
  }
  size_t sep = url.find("://");
  if (sep == std::string::npos) return invalid("it has no scheme");
  std::string scheme = absl::AsciiStrToLower(absl::string_view(url).substr(0, sep));
  if (scheme == "https") {
    return absl::InvalidArgumentError(absl::StrCat(
        "webhook URL \"", url,
        "\": https webhooks are not supported yet; put a TLS-terminating proxy in front"));
  }
  if (scheme != "http") return invalid(absl::StrCat("scheme \"", scheme, "\" is not http"));

  absl::string_view rest = absl::string_view(url).substr(sep + 3);
  size_t path_start = rest.find_first_of("/?#");
  absl::string_view authority = rest.substr(0, path_start);
  absl::string_view path =
      path_start == absl::string_view::npos ? absl::string_view() : rest.substr(path_start);
  if (absl::StrContains(authority, '@')) return invalid("user information is not supported");
  if (absl::StrContains(path, '#')) return invalid("it has a fragment");

  Endpoint ep;
  ep.url = url;
  absl::string_view port_text;
  if (absl::StartsWith(authority, "[")) {  // an IPv6 literal
    size_t close = authority.find(']');
    if (close == absl::string_view::npos) return invalid("an IPv6 address lacks its ']'");
    ep.host = std::string(authority.substr(1, close - 1));
    absl::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after[0] != ':') return invalid("unexpected characters after the IPv6 address");
      port_text = after.substr(1);
      if (port_text.empty()) return invalid("the port is empty");
    }
  } else {
    size_t colon = authority.find(':');
    ep.host = std::string(authority.substr(0, colon));
    if (colon != absl::string_view::npos) {
      port_text = authority.substr(colon + 1);
      if (port_text.empty()) return invalid("the port is empty");
    }
  }
  if (ep.host.empty()) return invalid("the host is empty");
  if (!port_text.empty()) {
    int port = 0;
    bool digits = std::all_of(port_text.begin(), port_text.end(),
                              [](char c) { return c >= '0' && c <= '9'; });
    if (!digits || !absl::SimpleAtoi(port_text, &port) || port < 1 || port > 65535) {
      return invalid(absl::StrCat("port \"", port_text, "\" is not a number from 1 to 65535"));
    }
    ep.port = port;
  }
  ep.path = path.empty() ? "/" : std::string(path);
  if (ep.path[0] == '?') ep.path.insert(0, "/");
  return ep;
}

}  // namespace

// ---------------------------------------------------------------------------------------------

std::string HmacSha256Hex(absl::string_view key, absl::string_view message) {
  // HMAC() with a null key means "reuse the previous key" in some OpenSSL paths; never pass one.
  static const unsigned char kEmpty[1] = {0};
  const void* key_data = key.empty() ? kEmpty : static_cast<const void*>(key.data());
  const auto* msg_data =
      message.empty() ? kEmpty : reinterpret_cast<const unsigned char*>(message.data());
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int mac_len = 0;
  // The one-shot HMAC() is not deprecated in OpenSSL 3 (only the HMAC_CTX API is).
  unsigned char* ok = HMAC(EVP_sha256(), key_data, static_cast<int>(key.size()), msg_data,
                           message.size(), mac, &mac_len);
  CHECK(ok != nullptr) << "HMAC-SHA256 failed";
  static const char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(2 * mac_len);
  for (unsigned int i = 0; i < mac_len; ++i) {
    out.push_back(kHex[mac[i] >> 4]);
    out.push_back(kHex[mac[i] & 0xf]);
  }
  return out;
}

bool TypeMatches(absl::string_view type, const std::vector<std::string>& patterns) {
  if (patterns.empty()) return true;
  for (const std::string& p : patterns) {
    if (!p.empty() && p.back() == '.') {
      if (absl::StartsWith(type, p)) return true;
    } else if (type == p) {
      return true;
    }
  }
  return false;
}

// One webhook: its queue and the thread that drains it. A webhook that is down delays only
// its own thread.
struct Dispatcher {
  Endpoint endpoint;
  std::vector<std::string> types;
  std::thread thread;

  Mutex mu;
  CondVar cv;  // signalled on enqueue and on stop
  std::deque<v1::Event> queue ABSL_GUARDED_BY(mu);
  bool stop ABSL_GUARDED_BY(mu) = false;
  // The client of the request in flight, so Shutdown can cut it short.
  httplib::Client* active ABSL_GUARDED_BY(mu) = nullptr;
};

struct EventLog::Impl {
  Options options;
  Clock* clock = nullptr;
  std::vector<std::unique_ptr<Dispatcher>> dispatchers;  // fixed after Open
  std::once_flag shutdown_once;

  mutable Mutex mu;
  mutable CondVar appended;  // signalled on every Append and on Shutdown
  sqlite::Db db ABSL_GUARDED_BY(mu);
  bool shutdown ABSL_GUARDED_BY(mu) = false;
  // Events that could not be persisted (id 0), numbered by `unpersisted_seq`, for watchers.
  std::deque<std::pair<uint64_t, v1::Event>> unpersisted ABSL_GUARDED_BY(mu);
  uint64_t unpersisted_seq ABSL_GUARDED_BY(mu) = 0;

  ~Impl() {
    MutexLock lock(&mu);
    db.Close();
  }

  int64_t NowMs() const { return absl::ToUnixMillis(clock->Now()); }

  absl::StatusOr<int64_t> InsertLocked(const v1::Event& event) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    if (!db.is_open()) return absl::FailedPreconditionError("event log is closed");
    FEDGE_ASSIGN_OR_RETURN(
        Stmt stmt,
        Stmt::Prepare(db, "INSERT INTO events (time_unix_ms, type, proto) VALUES (?, ?, ?)"));
    stmt.Bind(1, static_cast<int64_t>(event.time_unix_ms()))
        .Bind(2, absl::string_view(event.type()))
        .BindBlob(3, event.SerializeAsString());
    FEDGE_RETURN_IF_ERROR(stmt.Run());
    return static_cast<int64_t>(sqlite3_last_insert_rowid(db.get()));
  }

  absl::StatusOr<std::vector<v1::Event>> ListLocked(int64_t after_id,
                                                    const std::vector<std::string>& types,
                                                    int limit) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    // A prefix "x." is the byte range ["x.", "x/"): '/' follows '.', and TEXT compares
    // bytewise, so this is exact and can use the (type, id) index.
    std::string sql = "SELECT id, proto FROM events WHERE id > ?";
    if (!types.empty()) {
      sql += " AND (";
      for (size_t i = 0; i < types.size(); ++i) {
        if (i > 0) sql += " OR ";
        bool prefix = !types[i].empty() && types[i].back() == '.';
        sql += prefix ? "(type >= ? AND type < ?)" : "type = ?";
      }
      sql += ")";
    }
    sql += " ORDER BY id LIMIT ?";
    FEDGE_ASSIGN_OR_RETURN(Stmt stmt, Stmt::Prepare(db, sql));
    int i = 1;
    stmt.Bind(i++, after_id);
    for (const std::string& t : types) {
      if (!t.empty() && t.back() == '.') {
        std::string upper = t;
        upper.back() = '/';
        stmt.Bind(i, absl::string_view(t));
        stmt.Bind(i + 1, absl::string_view(upper));
        i += 2;
      } else {
        stmt.Bind(i++, absl::string_view(t));
      }
    }
    stmt.Bind(i, static_cast<int64_t>(ClampLimit(limit)));
    std::vector<v1::Event> out;
    size_t bytes = 0;
    while (true) {
      FEDGE_ASSIGN_OR_RETURN(bool row, stmt.Step());
      if (!row) break;
      v1::Event e;
      absl::string_view blob = stmt.Blob(1);
      if (!e.ParseFromArray(blob.data(), static_cast<int>(blob.size()))) {
        return absl::DataLossError(
            absl::StrCat(kDbFile, ": stored event ", stmt.Int(0), " is corrupt"));
      }
      e.set_id(stmt.Int(0));
      BoundEvent(&e);
      bytes += e.ByteSizeLong();
      if (!out.empty() && bytes > kMaxListBytes) break;
      out.push_back(std::move(e));
    }
    return out;
  }

  void RecordDelivery(const v1::WebhookDelivery& d) {
    MutexLock lock(&mu);
    if (!db.is_open()) return;
    absl::Status status = [&]() -> absl::Status {
      mu.AssertHeld();
      FEDGE_ASSIGN_OR_RETURN(
          Stmt stmt, Stmt::Prepare(db,
                                   "INSERT INTO deliveries (event_id, url, attempt, http_status, "
                                   "error, delivered, time_unix_ms) VALUES (?, ?, ?, ?, ?, ?, ?)"));
      stmt.Bind(1, static_cast<int64_t>(d.event_id()))
          .Bind(2, absl::string_view(d.url()))
          .Bind(3, static_cast<int64_t>(d.attempt()))
          .Bind(4, static_cast<int64_t>(d.http_status()))
          .Bind(5, absl::string_view(d.error()))
          .Bind(6, static_cast<int64_t>(d.delivered() ? 1 : 0))
          .Bind(7, static_cast<int64_t>(d.time_unix_ms()));
      return stmt.Run();
    }();
    if (!status.ok()) LOG(WARNING) << "recording a webhook delivery: " << status;
  }

  // Waits up to `d` unless the dispatcher is stopped first. Returns false if stopped.
  static bool SleepUnlessStopped(Dispatcher* dispatcher, absl::Duration d) {
    absl::Time deadline = absl::Now() + d;
    MutexLock lock(&dispatcher->mu);
    while (!dispatcher->stop) {
      absl::Duration left = deadline - absl::Now();
      if (left <= absl::ZeroDuration()) return true;
      dispatcher->cv.WaitWithTimeout(&dispatcher->mu, left);
    }
    return false;
  }

  // POSTs `event` to the webhook, retrying, until delivered, out of attempts, or stopped.
  void Deliver(Dispatcher* dispatcher, httplib::Client* client, const v1::Event& event,
               absl::BitGen* rng) {
    google::protobuf::util::JsonPrintOptions json_options;
    json_options.preserve_proto_field_names = true;
    std::string body;
    auto json_status = google::protobuf::util::MessageToJsonString(event, &body, json_options);
    if (!json_status.ok()) {
      LOG(ERROR) << "encoding event " << event.id() << " as JSON: " << json_status.ToString();
      return;
    }
    httplib::Headers headers = {
        {"X-Fedge-Event", event.type()},
        {"X-Fedge-Delivery", absl::StrCat(event.id())},
        {"X-Fedge-Signature-256",
         absl::StrCat("sha256=", HmacSha256Hex(options.webhook_secret, body))},
        {"User-Agent", "fedge-cloud"},
    };
    const int max_attempts = std::max(1, options.max_attempts);
    absl::Duration backoff = std::max(options.initial_backoff, absl::Milliseconds(1));
    for (int attempt = 1; attempt <= max_attempts; ++attempt) {
      {
        MutexLock lock(&dispatcher->mu);
        if (dispatcher->stop) return;
        dispatcher->active = client;
      }
      httplib::Result res =
          client->Post(dispatcher->endpoint.path, headers, body, "application/json");
      {
        MutexLock lock(&dispatcher->mu);
        dispatcher->active = nullptr;
      }
      v1::WebhookDelivery record;
      record.set_event_id(event.id());
      record.set_url(dispatcher->endpoint.url);
      record.set_attempt(attempt);
      record.set_time_unix_ms(NowMs());
      if (!res) {
        record.set_error(httplib::to_string(res.error()));
      } else {
        record.set_http_status(res->status);
        if (res->status >= 200 && res->status < 300) {
          record.set_delivered(true);
        } else {
          record.set_error(absl::StrCat("HTTP ", res->status));
        }
      }
      RecordDelivery(record);
      if (record.delivered()) {
        DeliveriesTotal().Add({{"result", "delivered"}}).Increment();
        return;
      }
      if (attempt == max_attempts) {
        DeliveriesTotal().Add({{"result", "failed"}}).Increment();
        LOG(WARNING) << "webhook " << dispatcher->endpoint.url << ": giving up on event "
                     << event.id() << " (" << event.type() << ") after " << attempt
                     << " attempts: " << record.error();
        return;
      }
      DeliveriesTotal().Add({{"result", "retried"}}).Increment();
      // Full jitter: uniform in [0, backoff], with backoff doubling up to max_backoff.
      absl::Duration wait = absl::Nanoseconds(absl::Uniform<int64_t>(
          absl::IntervalClosedClosed, *rng, 0, absl::ToInt64Nanoseconds(backoff)));
      VLOG(1) << "webhook " << dispatcher->endpoint.url << ": attempt " << attempt << " for event "
              << event.id() << " failed (" << record.error() << "); retrying in " << wait;
      if (!SleepUnlessStopped(dispatcher, wait)) return;
      backoff = std::min(backoff * 2, std::max(options.max_backoff, absl::Milliseconds(1)));
    }
  }

  void RunDispatcher(Dispatcher* dispatcher) {
    httplib::Client client(dispatcher->endpoint.host, dispatcher->endpoint.port);
    auto timeout = absl::ToChronoMicroseconds(options.request_timeout);
    client.set_connection_timeout(timeout);
    client.set_read_timeout(timeout);
    client.set_write_timeout(timeout);
    absl::BitGen rng;
    while (true) {
      v1::Event event;
      {
        MutexLock lock(&dispatcher->mu);
        while (!dispatcher->stop && dispatcher->queue.empty()) {
          dispatcher->cv.Wait(&dispatcher->mu);
        }
        if (dispatcher->stop) return;
        event = std::move(dispatcher->queue.front());
        dispatcher->queue.pop_front();
      }
      Deliver(dispatcher, &client, event, &rng);
    }
  }

  void Enqueue(const v1::Event& event) {
    const size_t max_queue = std::max<size_t>(1, options.max_queue);
    for (const auto& dispatcher : dispatchers) {
      if (!TypeMatches(event.type(), dispatcher->types)) continue;
      size_t dropped = 0;
      {
        MutexLock lock(&dispatcher->mu);
        if (dispatcher->stop) continue;
        while (dispatcher->queue.size() >= max_queue) {
          dispatcher->queue.pop_front();
          ++dropped;
        }
        dispatcher->queue.push_back(event);
      }
      dispatcher->cv.Signal();
      if (dropped > 0) {
        DroppedTotal().Increment(static_cast<double>(dropped));
        LOG_EVERY_N(WARNING, 100) << "webhook " << dispatcher->endpoint.url
                                  << ": queue full, dropping the oldest delivery";
      }
    }
  }

  void Shutdown() {
    std::call_once(shutdown_once, [this] {
      {
        MutexLock lock(&mu);
        shutdown = true;
      }
      appended.SignalAll();
      for (const auto& dispatcher : dispatchers) {
        size_t dropped = 0;
        {
          MutexLock lock(&dispatcher->mu);
          dispatcher->stop = true;
          dropped = dispatcher->queue.size();
          dispatcher->queue.clear();
          // Cuts a request in flight short instead of waiting out its timeout.
          if (dispatcher->active != nullptr) dispatcher->active->stop();
        }
        dispatcher->cv.SignalAll();
        if (dropped > 0) DroppedTotal().Increment(static_cast<double>(dropped));
      }
      for (const auto& dispatcher : dispatchers) {
        if (dispatcher->thread.joinable()) dispatcher->thread.join();
      }
    });
  }
};

EventLog::EventLog(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {
  for (const char* r : {"delivered", "retried", "failed"}) DeliveriesTotal().Add({{"result", r}});
  DroppedTotal();
}

EventLog::~EventLog() { Shutdown(); }

absl::StatusOr<std::unique_ptr<EventLog>> EventLog::Open(Options options) {
  if (options.data_dir.empty()) return absl::InvalidArgumentError("events: data_dir must be set");
  while (options.data_dir.size() > 1 && options.data_dir.back() == '/') {
    options.data_dir.pop_back();
  }
  if (!options.webhooks.empty() && options.webhook_secret.empty()) {
    return absl::InvalidArgumentError(
        "webhooks need a shared secret to sign their deliveries; set the webhook secret");
  }
  std::vector<std::unique_ptr<Dispatcher>> dispatchers;
  for (const Webhook& hook : options.webhooks) {
    auto dispatcher = std::make_unique<Dispatcher>();
    FEDGE_ASSIGN_OR_RETURN(dispatcher->endpoint, ParseUrl(hook.url));
    dispatcher->types = hook.types;
    dispatchers.push_back(std::move(dispatcher));
  }

  auto impl = std::make_unique<Impl>();
  impl->clock = options.clock != nullptr ? options.clock : Clock::Real();
  impl->options = std::move(options);
  FEDGE_RETURN_IF_ERROR(MakeDirs(impl->options.data_dir));
  {
    MutexLock lock(&impl->mu);
    std::string db_path = absl::StrCat(impl->options.data_dir, "/", kDbFile);
    // Db::Open sets synchronous = FULL: a watcher resumes from the last id it saw, so a
    // committed id must not be rolled back by a power loss and reused for a different event.
    // Lifecycle events are rare.
    sqlite::Db::Options db_options;
    db_options.label = kDbFile;
    FEDGE_ASSIGN_OR_RETURN(impl->db,
                           sqlite::Db::Open(db_path, Migrations(), std::move(db_options)));
  }

  // Threads start last, once nothing can fail; Shutdown joins them before Impl goes away.
  impl->dispatchers = std::move(dispatchers);
  Impl* raw = impl.get();
  for (const auto& dispatcher : raw->dispatchers) {
    Dispatcher* d = dispatcher.get();
    d->thread = std::thread([raw, d] { raw->RunDispatcher(d); });
  }
  return std::unique_ptr<EventLog>(new EventLog(std::move(impl)));
}

int64_t EventLog::Append(v1::Event event) {
  BoundEvent(&event);
  if (event.time_unix_ms() == 0) event.set_time_unix_ms(impl_->NowMs());
  event.set_id(0);  // the stored proto carries no id; the row id is the id
  {
    MutexLock lock(&impl_->mu);
    absl::StatusOr<int64_t> id = impl_->InsertLocked(event);
    if (id.ok()) {
      event.set_id(*id);
    } else {
      LOG(ERROR) << "persisting event " << event.type() << ": " << id.status()
                 << "; passing it on unpersisted (id 0)";
      impl_->unpersisted.emplace_back(++impl_->unpersisted_seq, event);
      while (impl_->unpersisted.size() > kMaxUnpersisted) impl_->unpersisted.pop_front();
    }
  }
  impl_->appended.SignalAll();
  EventsTotal().Add({{"type", TypeLabel(event.type())}}).Increment();
  impl_->Enqueue(event);
  return event.id();
}

absl::StatusOr<std::vector<v1::Event>> EventLog::List(int64_t after_id,
                                                      const std::vector<std::string>& types,
                                                      int limit) const {
  MutexLock lock(&impl_->mu);
  if (!impl_->db.is_open()) return absl::FailedPreconditionError("event log is closed");
  return impl_->ListLocked(after_id, types, limit);
}

absl::StatusOr<std::vector<v1::Event>> EventLog::WaitAfter(int64_t after_id,
                                                           const std::vector<std::string>& types,
                                                           int limit,
                                                           absl::Duration timeout) const {
  // Waiting is in real time: a condition variable cannot wait on an injected clock.
  const absl::Time deadline = absl::Now() + timeout;
  MutexLock lock(&impl_->mu);
  if (!impl_->db.is_open()) return absl::FailedPreconditionError("event log is closed");
  const uint64_t seen_unpersisted = impl_->unpersisted_seq;
  while (true) {
    if (impl_->shutdown) return std::vector<v1::Event>();
    FEDGE_ASSIGN_OR_RETURN(std::vector<v1::Event> events,
                           impl_->ListLocked(after_id, types, limit));
    // Unpersisted events appended since this wait began go out too, after the stored ones.
    for (const auto& [seq, event] : impl_->unpersisted) {
      if (seq > seen_unpersisted && TypeMatches(event.type(), types) &&
          static_cast<int>(events.size()) < ClampLimit(limit)) {
        events.push_back(event);
      }
    }
    if (!events.empty()) return events;
    absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) return events;
    impl_->appended.WaitWithTimeout(&impl_->mu, left);
  }
}

absl::StatusOr<std::vector<v1::WebhookDelivery>> EventLog::Deliveries(int limit) const {
  MutexLock lock(&impl_->mu);
  if (!impl_->db.is_open()) return absl::FailedPreconditionError("event log is closed");
  FEDGE_ASSIGN_OR_RETURN(
      Stmt stmt, Stmt::Prepare(impl_->db,
                               "SELECT id, event_id, url, attempt, http_status, error, delivered, "
                               "time_unix_ms FROM deliveries ORDER BY id DESC LIMIT ?"));
  stmt.Bind(1, static_cast<int64_t>(ClampLimit(limit)));
  std::vector<v1::WebhookDelivery> out;
  while (true) {
    FEDGE_ASSIGN_OR_RETURN(bool row, stmt.Step());
    if (!row) break;
    v1::WebhookDelivery d;
    d.set_id(stmt.Int(0));
    d.set_event_id(stmt.Int(1));
    d.set_url(stmt.Text(2));
    d.set_attempt(static_cast<int32_t>(stmt.Int(3)));
    d.set_http_status(static_cast<int32_t>(stmt.Int(4)));
    d.set_error(stmt.Text(5));
    d.set_delivered(stmt.Int(6) != 0);
    d.set_time_unix_ms(stmt.Int(7));
    out.push_back(std::move(d));
  }
  return out;
}

void EventLog::Shutdown() { impl_->Shutdown(); }

}  // namespace fedge::cloud::events
