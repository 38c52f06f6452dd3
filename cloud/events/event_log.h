#ifndef FEDGE_CLOUD_EVENTS_EVENT_LOG_H_
#define FEDGE_CLOUD_EVENTS_EVENT_LOG_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/time/clock.h"
#include "fedge/v1/admin.pb.h"

namespace fedge::cloud::events {

// A webhook endpoint: events are POSTed to it as JSON.
struct Webhook {
  std::string url;  // http://host:port/path
  // Event types to send; empty sends all. An entry ending in "." matches a prefix ("job.").
  std::vector<std::string> types;
};

// The persisted lifecycle event log (its own SQLite file, `events.db`, under data_dir) behind
// Admin.WatchEvents, and the webhook dispatcher.
//
// Append() persists an event, wakes every watcher and queues the event for each matching
// webhook; it never waits on a webhook. A dispatcher thread POSTs each event as JSON with
//   Content-Type: application/json
//   X-Fedge-Event: <type>
//   X-Fedge-Delivery: <event id>
//   X-Fedge-Signature-256: sha256=<hex HMAC-SHA256 of the body with the shared secret>
// retrying failures (connection errors and non-2xx answers) with exponential backoff and
// jitter up to max_attempts, and records every attempt in a delivery log. A webhook that is
// down costs only its own queue, which is bounded: when full, the oldest queued deliveries
// are dropped and counted. Thread-safe.
class EventLog {
 public:
  struct Options {
    std::string data_dir;
    Clock* clock = Clock::Real();
    std::vector<Webhook> webhooks;
    std::string webhook_secret;
    int max_attempts = 8;
    absl::Duration initial_backoff = absl::Milliseconds(200);
    absl::Duration max_backoff = absl::Seconds(30);
    absl::Duration request_timeout = absl::Seconds(5);
    size_t max_queue = 10000;
  };

  // INVALID_ARGUMENT for a malformed webhook URL (only http:// is supported) or webhooks
  // without a secret.
  static absl::StatusOr<std::unique_ptr<EventLog>> Open(Options options);
  ~EventLog();  // Shutdown()

  // Assigns id and time (unless time is set), persists, notifies. Returns the id. An event that
  // cannot be persisted is logged and still delivered to watchers and webhooks (id 0).
  int64_t Append(v1::Event event);

  // Events with id > after_id matching `types` (empty: all; "x." prefixes), oldest first.
  absl::StatusOr<std::vector<v1::Event>> List(int64_t after_id,
                                              const std::vector<std::string>& types,
                                              int limit) const;
  // Like List, but if none match yet waits up to `timeout` for one. Returns an empty vector
  // on timeout or shutdown.
  absl::StatusOr<std::vector<v1::Event>> WaitAfter(int64_t after_id,
                                                   const std::vector<std::string>& types,
                                                   int limit, absl::Duration timeout) const;
  // Newest first; limit 0 means 100.
  absl::StatusOr<std::vector<v1::WebhookDelivery>> Deliveries(int limit) const;

  // Stops the dispatcher (queued deliveries are dropped; they are in the log as undelivered
  // only if attempted) and wakes all watchers.
  void Shutdown();

 private:
  struct Impl;
  explicit EventLog(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// HMAC-SHA256 of message under key, lowercase hex (OpenSSL).
std::string HmacSha256Hex(absl::string_view key, absl::string_view message);

// True if `type` matches one of `patterns` (empty: everything; "x." matches the prefix "x.").
bool TypeMatches(absl::string_view type, const std::vector<std::string>& patterns);

}  // namespace fedge::cloud::events

#endif  // FEDGE_CLOUD_EVENTS_EVENT_LOG_H_
