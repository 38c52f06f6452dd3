#include "cloud/api/blob_stream.h"

#include <algorithm>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "common/metrics/metrics.h"
#include "common/status/grpc_status.h"
#include "common/status/quote.h"
#include "glog/logging.h"

namespace fedge::cloud::api {
namespace {

prometheus::Counter& StreamedBytes() {
  static auto& c = metrics::CounterFamily("fedge_cloud_artifact_sent_bytes_total",
                                          "Artifact bytes streamed to clients in chunks.")
                       .Add({});
  return c;
}

}  // namespace

absl::StatusOr<std::unique_ptr<BlobReader>> BlobReader::Open(const registry::Registry& registry,
                                                             const std::string& sha256,
                                                             int64_t offset) {
  if (!IsSha256Hex(sha256)) {
    return absl::InvalidArgumentError(
        absl::StrCat(Quote(sha256), " is not a sha256 digest (64 lowercase hex characters)"));
  }
  if (!registry.HasBlob(sha256)) {
    return absl::NotFoundError(absl::StrCat("no artifact with digest ", sha256));
  }
  std::unique_ptr<BlobReader> reader(new BlobReader);
  reader->sha256_ = sha256;
  reader->in_.open(registry.BlobPath(sha256), std::ios::binary);
  reader->in_.seekg(0, std::ios::end);
  reader->size_ = static_cast<int64_t>(reader->in_.tellg());
  if (!reader->in_ || offset < 0 || offset > reader->size_) {
    return absl::OutOfRangeError(
        absl::StrCat("offset ", offset, " is outside the artifact (", reader->size_, " bytes)"));
  }
  reader->in_.seekg(0);
  // The bytes before the offset are digested too, so a resumed download is verified whole.
  std::string buf;
  for (int64_t at = 0; at < offset;) {
    const int64_t n = std::min(kChunkBytes, offset - at);
    buf.resize(static_cast<size_t>(n));
    reader->in_.read(buf.data(), n);
    if (reader->in_.gcount() != n) {
      return absl::DataLossError("artifact file is shorter than expected");
    }
    reader->digest_.Update(buf);
    at += n;
  }
  reader->offset_ = offset;
  return reader;
}

absl::StatusOr<bool> BlobReader::Next(v1::Chunk* chunk) {
  if (offset_ >= size_ && !first_) return false;
  const int64_t n = std::min(kChunkBytes, size_ - offset_);
  chunk->Clear();
  std::string* data = chunk->mutable_data();
  data->resize(static_cast<size_t>(n));
  in_.read(data->data(), n);
  if (in_.gcount() != n) return absl::DataLossError("artifact file is shorter than expected");
  digest_.Update(*data);
  chunk->set_offset(offset_);
  if (first_) {
    chunk->set_total_size(size_);
    chunk->set_sha256(sha256_);
    first_ = false;
  }
  offset_ += n;
  if (offset_ >= size_) {
    const std::string got = digest_.HexDigest();
    if (got != sha256_) {
      LOG(ERROR) << "stored artifact " << sha256_ << " is corrupt: its bytes hash to " << got;
      return absl::DataLossError(
          absl::StrCat("the stored artifact ", sha256_.substr(0, 12),
                       " is corrupt (its bytes hash to ", got.substr(0, 12),
                       "); retrying cannot help: restore the coordinator's data from a "
                       "backup, or register the model again"));
    }
  }
  StreamedBytes().Increment(static_cast<double>(n));
  return true;
}

grpc::Status StreamBlob(const registry::Registry& registry, const std::string& sha256,
                        int64_t offset, grpc::ServerContext* context,
                        grpc::ServerWriter<v1::Chunk>* writer) {
  auto reader = BlobReader::Open(registry, sha256, offset);
  if (!reader.ok()) return ToGrpcStatus(reader.status());
  v1::Chunk chunk;
  while (true) {
    if (context->IsCancelled()) return grpc::Status(grpc::StatusCode::CANCELLED, "cancelled");
    absl::StatusOr<bool> more = (*reader)->Next(&chunk);
    if (!more.ok()) return ToGrpcStatus(more.status());
    if (!*more) return grpc::Status::OK;
    if (!writer->Write(chunk)) return grpc::Status(grpc::StatusCode::CANCELLED, "client gone");
  }
}

}  // namespace fedge::cloud::api
