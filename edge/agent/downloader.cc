#include "edge/agent/downloader.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "common/net/identity.h"
#include "common/status/grpc_status.h"
#include "common/status/status.h"
#include "common/tensor/sha256.h"
#include "glog/logging.h"

namespace fedge::edge::agent {
namespace {

namespace fs = std::filesystem;

bool Retryable(const grpc::Status& st) {
  switch (st.error_code()) {
    case grpc::StatusCode::UNAVAILABLE:
    case grpc::StatusCode::DEADLINE_EXCEEDED:
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
    case grpc::StatusCode::ABORTED:
    case grpc::StatusCode::CANCELLED:
    case grpc::StatusCode::INTERNAL:
      return true;
    default:
      return false;
  }
}

int64_t FileSize(const std::string& path) {
  std::error_code ec;
  const auto size = fs::file_size(path, ec);
  return ec ? 0 : static_cast<int64_t>(size);
}

}  // namespace

absl::StatusOr<std::string> Downloader::Fetch(const std::string& sha256, int64_t* downloaded) {
  *downloaded = 0;
  if (!IsSha256Hex(sha256)) {
    return absl::InvalidArgumentError(absl::StrCat("'", sha256, "' is not a sha256 digest"));
  }
  auto cached = options_.runtime->ReadCached(sha256);
  if (cached.ok()) return cached;
  const std::string part = options_.runtime->CachePath(sha256) + ".part";
  absl::Duration backoff = options_.initial_backoff;
  bool restarted = false;  // a corrupted whole is fetched again once
  grpc::Status last;
  for (int attempt = 1; attempt <= options_.max_attempts; ++attempt) {
    int64_t have = FileSize(part);
    int64_t total = -1;
    {
      grpc::ClientContext context;
      net::SetCallerNodeId(&context, options_.node_id);
      context.set_deadline(absl::ToChronoTime(absl::Now() + options_.rpc_timeout));
      v1::DownloadRequest request;
      request.set_sha256(sha256);
      request.set_offset(have);
      auto reader = options_.stub->DownloadModel(&context, request);
      std::ofstream out(part, std::ios::binary | std::ios::app);
      if (!out) return absl::UnavailableError(absl::StrCat("cannot write ", part));
      v1::Chunk chunk;
      while (reader->Read(&chunk)) {
        if (chunk.total_size() > 0) total = chunk.total_size();
        if (chunk.offset() != have) {
          context.TryCancel();
          break;
        }
        out.write(chunk.data().data(), static_cast<std::streamsize>(chunk.data().size()));
        have += static_cast<int64_t>(chunk.data().size());
        *downloaded += static_cast<int64_t>(chunk.data().size());
      }
      out.flush();
      last = reader->Finish();
      if (!out) return absl::UnavailableError(absl::StrCat("cannot write ", part, " (disk full?)"));
    }
    if (last.error_code() == grpc::StatusCode::OUT_OF_RANGE) {
      // The part is longer than the artifact: start over.
      fs::remove(part);
      continue;
    }
    if (!last.ok() && !Retryable(last)) return FromGrpcStatus(last);
    if (last.ok() && total >= 0 && have == total) {
      std::ifstream in(part, std::ios::binary);
      std::ostringstream ss;
      ss << in.rdbuf();
      std::string bytes = ss.str();
      if (Sha256Hex(bytes) == sha256) {
        FEDGE_RETURN_IF_ERROR(options_.runtime->WriteCached(sha256, bytes));
        fs::remove(part);
        return bytes;
      }
      fs::remove(part);
      if (restarted) {
        return absl::DataLossError(absl::StrCat("artifact ", sha256.substr(0, 12),
                                                " failed its sha256 check twice"));
      }
      restarted = true;
      LOG(WARNING) << "node=" << options_.node_id << " artifact " << sha256.substr(0, 12)
                   << " failed its sha256 check; fetching it again";
      continue;
    }
    LOG(WARNING) << "node=" << options_.node_id << " download of " << sha256.substr(0, 12)
                 << " interrupted at " << have << " bytes ("
                 << (last.ok() ? "stream ended early" : last.error_message())
                 << "); resuming from there";
    for (absl::Duration slept; slept < backoff; slept += absl::Milliseconds(50)) {
      if (options_.stopping && options_.stopping()) {
        return absl::CancelledError("the edge is stopping; the download resumes next time");
      }
      absl::SleepFor(absl::Milliseconds(50));
    }
    backoff = std::min(backoff * 2, options_.max_backoff);
  }
  return absl::UnavailableError(absl::StrCat("download of ", sha256.substr(0, 12),
                                             " did not complete after ", options_.max_attempts,
                                             " attempts: ", last.error_message()));
}

}  // namespace fedge::edge::agent
