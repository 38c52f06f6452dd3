#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "cloud/events/event_log.h"
#include "common/sync/mutex.h"
#include "common/tensor/sha256.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/json_util.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "tests/testing/fake_clock.h"
#include "tests/testing/fixtures.h"

namespace fedge::cloud::events {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::SizeIs;

constexpr char kSecret[] = "s3cret-for-tests";

// RFC 2104 HMAC-SHA256, built here on fedge::Sha256 so the signature check does not trust the
// code under test: H((K' ^ opad) || H((K' ^ ipad) || m)), K' the key zero-padded to 64 bytes.
std::string ReferenceHmacSha256Hex(absl::string_view key, absl::string_view message) {
  constexpr size_t kBlock = 64;
  std::string k(key);
  if (k.size() > kBlock) k = absl::HexStringToBytes(Sha256Hex(k));
  k.resize(kBlock, '\0');
  std::string ipad(kBlock, '\0'), opad(kBlock, '\0');
  for (size_t i = 0; i < kBlock; ++i) {
    ipad[i] = static_cast<char>(k[i] ^ 0x36);
    opad[i] = static_cast<char>(k[i] ^ 0x5c);
  }
  Sha256 inner;
  inner.Update(ipad);
  inner.Update(message);
  std::string inner_digest = absl::HexStringToBytes(inner.HexDigest());
  Sha256 outer;
  outer.Update(opad);
  outer.Update(inner_digest);
  return outer.HexDigest();
}

v1::Event MakeEvent(const std::string& type, const std::string& model = "m") {
  v1::Event e;
  e.set_type(type);
  e.set_model(model);
  e.set_version(3);
  e.set_message(absl::StrCat("event ", type));
  (*e.mutable_attributes())["k"] = "v";
  return e;
}

std::vector<int64_t> Ids(const std::vector<v1::Event>& events) {
  std::vector<int64_t> ids;
  for (const auto& e : events) ids.push_back(e.id());
  return ids;
}

std::vector<std::string> Types(const std::vector<v1::Event>& events) {
  std::vector<std::string> types;
  for (const auto& e : events) types.push_back(e.type());
  return types;
}

// Polls `done` until it holds or 10 s pass.
bool Eventually(const std::function<bool()>& done) {
  absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (absl::Now() < deadline) {
    if (done()) return true;
    absl::SleepFor(absl::Milliseconds(5));
  }
  return done();
}

// A webhook receiver on 127.0.0.1:<some free port>. `status_for(n)` answers the n-th request
// (from 1); by default every request gets 200.
class Receiver {
 public:
  struct Request {
    std::string body;
    httplib::Headers headers;
  };

  explicit Receiver(std::function<int(int)> status_for = [](int) { return 200; })
      : status_for_(std::move(status_for)) {
    server_.Post("/hook", [this](const httplib::Request& req, httplib::Response& res) {
      int n;
      {
        MutexLock lock(&mu_);
        requests_.push_back({req.body, req.headers});
        n = static_cast<int>(requests_.size());
      }
      res.status = status_for_(n);
      res.set_content("ok", "text/plain");
    });
    port_ = server_.bind_to_any_port("127.0.0.1");
    EXPECT_GT(port_, 0);
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    EXPECT_TRUE(Eventually([this] { return server_.is_running(); }));
  }
  ~Receiver() {
    server_.stop();
    thread_.join();
  }

  std::string url() const { return absl::StrCat("http://127.0.0.1:", port_, "/hook"); }
  std::vector<Request> requests() const {
    MutexLock lock(&mu_);
    return requests_;
  }
  size_t count() const {
    MutexLock lock(&mu_);
    return requests_.size();
  }

 private:
  std::function<int(int)> status_for_;
  httplib::Server server_;
  int port_ = 0;
  std::thread thread_;
  mutable Mutex mu_;
  std::vector<Request> requests_ ABSL_GUARDED_BY(mu_);
};

// A port on 127.0.0.1 that refuses connections: the socket is bound (so nothing else can take
// the port) but never listens.
class ClosedPort {
 public:
  ClosedPort() {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    EXPECT_GE(fd_, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    socklen_t len = sizeof(addr);
    EXPECT_EQ(::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len), 0);
    port_ = ntohs(addr.sin_port);
  }
  ~ClosedPort() { ::close(fd_); }
  std::string url() const { return absl::StrCat("http://127.0.0.1:", port_, "/hook"); }

 private:
  int fd_ = -1;
  int port_ = 0;
};

EventLog::Options BaseOptions(const std::string& dir) {
  EventLog::Options options;
  options.data_dir = dir;
  options.webhook_secret = kSecret;
  options.initial_backoff = absl::Milliseconds(2);
  options.max_backoff = absl::Milliseconds(20);
  options.request_timeout = absl::Seconds(2);
  return options;
}

std::vector<v1::WebhookDelivery> DeliveriesFor(const EventLog& log, const std::string& url) {
  auto all = log.Deliveries(1000);
  EXPECT_TRUE(all.ok()) << all.status();
  std::vector<v1::WebhookDelivery> out;
  if (!all.ok()) return out;
  for (auto it = all->rbegin(); it != all->rend(); ++it) {  // oldest first
    if (it->url() == url) out.push_back(*it);
  }
  return out;
}

// --- The log ----------------------------------------------------------------------------------

TEST(EventLogTest, IdsIncreaseAndSurviveReopening) {
  fedge::testing::TempDir dir;
  std::string data_dir = dir.path() + "/nested/events";  // created on demand
  fedge::testing::FakeClock clock;
  std::vector<int64_t> first;
  {
    EventLog::Options options = BaseOptions(data_dir);
    options.clock = &clock;
    auto log = EventLog::Open(options);
    ASSERT_TRUE(log.ok()) << log.status();
    for (const char* type : {"job.started", "round.completed", "job.completed"}) {
      first.push_back((*log)->Append(MakeEvent(type)));
    }
  }
  ASSERT_THAT(first, SizeIs(3));
  EXPECT_GT(first[0], 0);
  EXPECT_LT(first[0], first[1]);
  EXPECT_LT(first[1], first[2]);

  EventLog::Options options = BaseOptions(data_dir);
  options.clock = &clock;
  auto log = EventLog::Open(options);
  ASSERT_TRUE(log.ok()) << log.status();
  int64_t next = (*log)->Append(MakeEvent("version.registered"));
  EXPECT_GT(next, first[2]);

  auto all = (*log)->List(0, {}, 0);
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_THAT(Ids(*all), ElementsAre(first[0], first[1], first[2], next));
  EXPECT_THAT(Types(*all),
              ElementsAre("job.started", "round.completed", "job.completed", "version.registered"));
  // The stored event round-trips, with its time taken from the injected clock.
  v1::Event expected = MakeEvent("job.started");
  expected.set_id(first[0]);
  expected.set_time_unix_ms(absl::ToUnixMillis(clock.Now()));
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals((*all)[0], expected))
      << (*all)[0].DebugString();
}

TEST(EventLogTest, AppendKeepsAGivenTime) {
  fedge::testing::TempDir dir;
  auto log = EventLog::Open(BaseOptions(dir.path()));
  ASSERT_TRUE(log.ok()) << log.status();
  v1::Event e = MakeEvent("job.started");
  e.set_time_unix_ms(1234);
  (*log)->Append(e);
  auto all = (*log)->List(0, {}, 0);
  ASSERT_TRUE(all.ok()) << all.status();
  ASSERT_THAT(*all, SizeIs(1));
  EXPECT_EQ((*all)[0].time_unix_ms(), 1234);
}

TEST(EventLogTest, ListFiltersByTypeAndPrefixAndRespectsAfterIdAndLimit) {
  fedge::testing::TempDir dir;
  auto opened = EventLog::Open(BaseOptions(dir.path()));
  ASSERT_TRUE(opened.ok()) << opened.status();
  EventLog& log = **opened;
  int64_t started = log.Append(MakeEvent("job.started"));
  int64_t round = log.Append(MakeEvent("round.completed"));
  int64_t jobx = log.Append(MakeEvent("jobx.other"));  // not under the prefix "job."
  int64_t job = log.Append(MakeEvent("job"));          // nor is the bare word
  int64_t completed = log.Append(MakeEvent("job.completed"));
  int64_t version = log.Append(MakeEvent("version.registered"));

  auto list = [&](int64_t after, std::vector<std::string> types, int limit) {
    auto r = log.List(after, types, limit);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? Ids(*r) : std::vector<int64_t>{};
  };
  EXPECT_THAT(list(0, {}, 0), ElementsAre(started, round, jobx, job, completed, version));
  EXPECT_THAT(list(0, {"job."}, 0), ElementsAre(started, completed));
  EXPECT_THAT(list(0, {"job"}, 0), ElementsAre(job));
  EXPECT_THAT(list(0, {"round.completed"}, 0), ElementsAre(round));
  EXPECT_THAT(list(0, {"job.", "version.registered"}, 0), ElementsAre(started, completed, version));
  EXPECT_THAT(list(0, {"nothing.here"}, 0), ElementsAre());
  EXPECT_THAT(list(started, {"job."}, 0), ElementsAre(completed));
  EXPECT_THAT(list(round, {}, 2), ElementsAre(jobx, job));
  EXPECT_THAT(list(0, {"job.", "version."}, 2), ElementsAre(started, completed));
  EXPECT_THAT(list(version, {}, 0), ElementsAre());
}

TEST(EventLogTest, WaitAfterReturnsAnEventAppendedFromAnotherThread) {
  fedge::testing::TempDir dir;
  auto opened = EventLog::Open(BaseOptions(dir.path()));
  ASSERT_TRUE(opened.ok()) << opened.status();
  EventLog& log = **opened;
  int64_t before = log.Append(MakeEvent("job.started"));

  std::atomic<int64_t> appended{0};
  std::thread writer([&] {
    absl::SleepFor(absl::Milliseconds(50));
    log.Append(MakeEvent("node.online"));  // does not match; the watcher keeps waiting
    absl::SleepFor(absl::Milliseconds(50));
    appended = log.Append(MakeEvent("job.completed"));
  });
  // The timeout is far longer than the test: only the append can end this wait.
  auto got = log.WaitAfter(before, {"job."}, 10, absl::Minutes(5));
  writer.join();
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_THAT(Ids(*got), ElementsAre(appended.load()));
  EXPECT_THAT(Types(*got), ElementsAre("job.completed"));
}

TEST(EventLogTest, WaitAfterReturnsExistingEventsAtOnce) {
  fedge::testing::TempDir dir;
  auto opened = EventLog::Open(BaseOptions(dir.path()));
  ASSERT_TRUE(opened.ok()) << opened.status();
  int64_t id = (*opened)->Append(MakeEvent("job.started"));
  auto got = (*opened)->WaitAfter(0, {}, 0, absl::Minutes(5));
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_THAT(Ids(*got), ElementsAre(id));
}

TEST(EventLogTest, WaitAfterTimesOutEmptyWithoutAMatchingEvent) {
  fedge::testing::TempDir dir;
  auto opened = EventLog::Open(BaseOptions(dir.path()));
  ASSERT_TRUE(opened.ok()) << opened.status();
  int64_t id = (*opened)->Append(MakeEvent("job.started"));
  auto got = (*opened)->WaitAfter(id, {}, 0, absl::Milliseconds(50));
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_THAT(*got, SizeIs(0));
  got = (*opened)->WaitAfter(0, {"deployment."}, 0, absl::Milliseconds(50));
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_THAT(*got, SizeIs(0));
}

TEST(EventLogTest, ShutdownWakesWatchers) {
  fedge::testing::TempDir dir;
  auto opened = EventLog::Open(BaseOptions(dir.path()));
  ASSERT_TRUE(opened.ok()) << opened.status();
  EventLog& log = **opened;
  absl::StatusOr<std::vector<v1::Event>> got;
  std::thread watcher([&] { got = log.WaitAfter(0, {}, 0, absl::Minutes(5)); });
  absl::SleepFor(absl::Milliseconds(50));
  log.Shutdown();
  watcher.join();  // would take five minutes if Shutdown did not wake it
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_THAT(*got, SizeIs(0));
}

TEST(EventLogTest, TypeMatchesExactNamesAndDotPrefixes) {
  EXPECT_TRUE(TypeMatches("job.started", {}));
  EXPECT_TRUE(TypeMatches("job.started", {"job."}));
  EXPECT_TRUE(TypeMatches("job.started", {"node.online", "job.started"}));
  EXPECT_FALSE(TypeMatches("job.started", {"job"}));
  EXPECT_FALSE(TypeMatches("jobx.started", {"job."}));
  EXPECT_FALSE(TypeMatches("job.started", {"job.start"}));
}

// --- Signatures -------------------------------------------------------------------------------

TEST(EventHmacTest, MatchesRfc4231TestCase2) {
  const std::string expected = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
  EXPECT_EQ(HmacSha256Hex("Jefe", "what do ya want for nothing?"), expected);
  // The reference used by the webhook tests agrees with the RFC too.
  EXPECT_EQ(ReferenceHmacSha256Hex("Jefe", "what do ya want for nothing?"), expected);
}

TEST(EventHmacTest, AgreesWithTheReferenceForLongKeysAndEmptyInput) {
  std::string long_key(131, '\xaa');  // longer than a block: hashed first
  EXPECT_EQ(HmacSha256Hex(long_key, "Test Using Larger Than Block-Size Key - Hash Key First"),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");  // RFC 4231 #6
  EXPECT_EQ(HmacSha256Hex("", ""), ReferenceHmacSha256Hex("", ""));
  EXPECT_EQ(HmacSha256Hex(kSecret, "{}"), ReferenceHmacSha256Hex(kSecret, "{}"));
}

// --- Webhooks ---------------------------------------------------------------------------------

TEST(WebhookEventTest, PostsSignedJsonWithHeaders) {
  Receiver receiver;
  fedge::testing::TempDir dir;
  EventLog::Options options = BaseOptions(dir.path());
  options.webhooks = {{receiver.url(), {}}};
  auto opened = EventLog::Open(options);
  ASSERT_TRUE(opened.ok()) << opened.status();
  v1::Event event = MakeEvent("version.registered");
  event.set_job_id("job-1");
  int64_t id = (*opened)->Append(event);

  ASSERT_TRUE(Eventually([&] { return receiver.count() >= 1; }));
  Receiver::Request req = receiver.requests()[0];
  auto header = [&](const std::string& name) {
    auto it = req.headers.find(name);
    return it == req.headers.end() ? std::string("<missing>") : it->second;
  };
  EXPECT_EQ(header("Content-Type"), "application/json");
  EXPECT_EQ(header("X-Fedge-Event"), "version.registered");
  EXPECT_EQ(header("X-Fedge-Delivery"), absl::StrCat(id));
  EXPECT_EQ(header("X-Fedge-Signature-256"),
            absl::StrCat("sha256=", ReferenceHmacSha256Hex(kSecret, req.body)));
  EXPECT_THAT(req.body, HasSubstr("\"job_id\""));  // proto field names, not lowerCamelCase

  v1::Event got;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(req.body, &got).ok()) << req.body;
  v1::Event expected = event;
  expected.set_id(id);
  expected.set_time_unix_ms(got.time_unix_ms());
  EXPECT_GT(got.time_unix_ms(), 0);
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(got, expected))
      << got.DebugString();

  ASSERT_TRUE(Eventually([&] { return DeliveriesFor(**opened, receiver.url()).size() == 1; }));
  v1::WebhookDelivery d = DeliveriesFor(**opened, receiver.url())[0];
  EXPECT_EQ(d.event_id(), id);
  EXPECT_EQ(d.attempt(), 1);
  EXPECT_EQ(d.http_status(), 200);
  EXPECT_TRUE(d.delivered());
}

TEST(WebhookEventTest, RetriesFailuresAndLogsEveryAttempt) {
  Receiver receiver([](int n) { return n <= 2 ? 500 : 200; });
  fedge::testing::TempDir dir;
  EventLog::Options options = BaseOptions(dir.path());
  options.webhooks = {{receiver.url(), {}}};
  auto opened = EventLog::Open(options);
  ASSERT_TRUE(opened.ok()) << opened.status();
  int64_t id = (*opened)->Append(MakeEvent("job.completed"));

  ASSERT_TRUE(Eventually([&] {
    auto d = DeliveriesFor(**opened, receiver.url());
    return !d.empty() && d.back().delivered();
  }));
  std::vector<v1::WebhookDelivery> log = DeliveriesFor(**opened, receiver.url());
  ASSERT_THAT(log, SizeIs(3));
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(log[i].event_id(), id);
    EXPECT_EQ(log[i].attempt(), i + 1);
    EXPECT_EQ(log[i].http_status(), i < 2 ? 500 : 200);
    EXPECT_EQ(log[i].delivered(), i == 2);
  }
  EXPECT_THAT(log[0].error(), HasSubstr("500"));
  EXPECT_EQ(receiver.count(), 3u);
  // Every attempt carries the same body and signature.
  auto requests = receiver.requests();
  EXPECT_EQ(requests[0].body, requests[2].body);
}

TEST(WebhookEventTest, GivesUpAfterMaxAttempts) {
  Receiver receiver([](int) { return 503; });
  fedge::testing::TempDir dir;
  EventLog::Options options = BaseOptions(dir.path());
  options.webhooks = {{receiver.url(), {}}};
  options.max_attempts = 2;
  auto opened = EventLog::Open(options);
  ASSERT_TRUE(opened.ok()) << opened.status();
  int64_t first = (*opened)->Append(MakeEvent("job.failed"));
  int64_t second = (*opened)->Append(MakeEvent("job.failed"));

  // Deliveries are in order per webhook, so two attempts at the second event mean the first
  // is finished.
  ASSERT_TRUE(Eventually([&] { return DeliveriesFor(**opened, receiver.url()).size() >= 4; }));
  std::vector<v1::WebhookDelivery> log = DeliveriesFor(**opened, receiver.url());
  ASSERT_THAT(log, SizeIs(4));
  std::vector<std::pair<int64_t, int>> attempts;
  for (const auto& d : log) {
    attempts.emplace_back(d.event_id(), d.attempt());
    EXPECT_FALSE(d.delivered());
    EXPECT_EQ(d.http_status(), 503);
  }
  EXPECT_THAT(attempts, ElementsAre(std::make_pair(first, 1), std::make_pair(first, 2),
                                    std::make_pair(second, 1), std::make_pair(second, 2)));
}

TEST(WebhookEventTest, DeadWebhookDelaysNeitherAppendNorAHealthyWebhook) {
  ClosedPort dead;
  Receiver healthy;
  fedge::testing::TempDir dir;
  EventLog::Options options = BaseOptions(dir.path());
  options.webhooks = {{dead.url(), {}}, {healthy.url(), {}}};
  options.max_attempts = 1000000;  // the dead webhook's thread never gets past the first event
  auto opened = EventLog::Open(options);
  ASSERT_TRUE(opened.ok()) << opened.status();
  EventLog& log = **opened;

  int64_t first = log.Append(MakeEvent("job.started"));
  // The dead webhook's dispatcher is provably stuck on `first` once it has failed it twice.
  ASSERT_TRUE(Eventually([&] { return DeliveriesFor(log, dead.url()).size() >= 2; }));

  std::vector<int64_t> ids = {first};
  for (int i = 0; i < 20; ++i) ids.push_back(log.Append(MakeEvent("round.completed")));
  // Every Append returned while the dispatcher was stuck, and the events are visible at once.
  auto seen = log.WaitAfter(0, {}, 100, absl::ZeroDuration());
  ASSERT_TRUE(seen.ok()) << seen.status();
  EXPECT_EQ(Ids(*seen), ids);
  // The healthy webhook got them all while the dead one kept failing the first.
  ASSERT_TRUE(Eventually([&] { return healthy.count() == ids.size(); }));

  std::vector<v1::WebhookDelivery> failures = DeliveriesFor(log, dead.url());
  ASSERT_GE(failures.size(), 2u);
  for (const auto& d : failures) {
    EXPECT_EQ(d.event_id(), first);
    EXPECT_EQ(d.http_status(), 0);
    EXPECT_FALSE(d.delivered());
    EXPECT_FALSE(d.error().empty());
  }
  EXPECT_EQ(failures[0].attempt(), 1);
  EXPECT_EQ(failures[1].attempt(), 2);
  log.Shutdown();
}

TEST(WebhookEventTest, ShutdownInterruptsABackoff) {
  ClosedPort dead;
  fedge::testing::TempDir dir;
  EventLog::Options options = BaseOptions(dir.path());
  options.webhooks = {{dead.url(), {}}};
  options.initial_backoff = absl::Minutes(10);
  options.max_backoff = absl::Minutes(10);
  auto opened = EventLog::Open(options);
  ASSERT_TRUE(opened.ok()) << opened.status();
  (*opened)->Append(MakeEvent("job.started"));
  ASSERT_TRUE(Eventually([&] { return DeliveriesFor(**opened, dead.url()).size() == 1; }));
  absl::SleepFor(absl::Milliseconds(20));  // now in a backoff of up to ten minutes
  absl::Time start = absl::Now();
  (*opened)->Shutdown();
  // Not a performance goal: this only tells "interrupted" from "waited out the backoff".
  EXPECT_LT(absl::Now() - start, absl::Seconds(30));
  EXPECT_THAT(DeliveriesFor(**opened, dead.url()), SizeIs(1));
}

TEST(WebhookEventTest, TypeFiltersChooseWhatEachWebhookGets) {
  Receiver jobs;
  Receiver versions;
  fedge::testing::TempDir dir;
  EventLog::Options options = BaseOptions(dir.path());
  options.webhooks = {{jobs.url(), {"job.", "marker"}},
                      {versions.url(), {"version.registered", "marker"}}};
  auto opened = EventLog::Open(options);
  ASSERT_TRUE(opened.ok()) << opened.status();
  for (const char* type : {"job.started", "round.completed", "version.registered", "job.failed",
                           "jobx.other", "version.promoted", "marker"}) {
    (*opened)->Append(MakeEvent(type));
  }
  // Each webhook is served in order, so once it has the marker it has everything it will get.
  auto types_of = [](const Receiver& r) {
    std::vector<std::string> types;
    for (const auto& req : r.requests()) {
      auto it = req.headers.find("X-Fedge-Event");
      types.push_back(it == req.headers.end() ? "" : it->second);
    }
    return types;
  };
  ASSERT_TRUE(Eventually([&] {
    auto a = types_of(jobs), b = types_of(versions);
    return !a.empty() && a.back() == "marker" && !b.empty() && b.back() == "marker";
  }));
  EXPECT_THAT(types_of(jobs), ElementsAre("job.started", "job.failed", "marker"));
  EXPECT_THAT(types_of(versions), ElementsAre("version.registered", "marker"));
}

TEST(WebhookEventTest, RefusesBadUrlsAndMissingSecret) {
  fedge::testing::TempDir dir;
  auto open_with = [&](const std::string& url) {
    EventLog::Options options = BaseOptions(dir.path());
    options.webhooks = {{url, {}}};
    return EventLog::Open(options).status();
  };
  absl::Status https = open_with("https://hooks.example.com/x");
  EXPECT_EQ(https.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(https.message()), HasSubstr("https webhooks are not supported yet"));

  for (const std::string url :
       {"ftp://example.com/x", "example.com/hook", "http://", "http:///path", "http://host:/x",
        "http://host:0/x", "http://host:65536/x", "http://host:8o/x", "http://a b/x",
        "http://user@host/x", ""}) {
    absl::Status s = open_with(url);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << url << ": " << s;
    EXPECT_THAT(std::string(s.message()),
                HasSubstr(absl::StrCat("\"", absl::CHexEscape(url), "\"")));
  }

  for (const std::string url :
       {"http://127.0.0.1/hook", "http://localhost:8080", "HTTP://[::1]:9000/a?b=c"}) {
    EXPECT_TRUE(open_with(url).ok()) << url << ": " << open_with(url);
  }

  EventLog::Options no_secret = BaseOptions(dir.path());
  no_secret.webhook_secret.clear();
  no_secret.webhooks = {{"http://127.0.0.1/hook", {}}};
  EXPECT_EQ(EventLog::Open(no_secret).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace fedge::cloud::events
