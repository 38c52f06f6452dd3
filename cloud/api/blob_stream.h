#ifndef FEDGE_CLOUD_API_BLOB_STREAM_H_
#define FEDGE_CLOUD_API_BLOB_STREAM_H_

#include <cstdint>
#include <fstream>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cloud/registry/registry.h"
#include "common/tensor/sha256.h"
#include "fedge/v1/model.pb.h"
#include "grpcpp/server_context.h"
#include "grpcpp/support/sync_stream.h"

namespace fedge::cloud::api {

// The largest chunk either side sends: 1 MiB, well under gRPC's default 4 MiB message limit.
inline constexpr int64_t kChunkBytes = 1 << 20;

// Reads a stored blob as the chunks a download sends, from `offset`. Every byte of the file,
// including those before `offset`, is digested as it is read, and the last chunk is given only
// if the digest matches: a blob that rotted on disk ends in DATA_LOSS, never in a complete
// download of the wrong bytes. Not thread-safe.
class BlobReader {
 public:
  // INVALID_ARGUMENT (not a digest), NOT_FOUND (no such blob), OUT_OF_RANGE (offset).
  static absl::StatusOr<std::unique_ptr<BlobReader>> Open(const registry::Registry& registry,
                                                          const std::string& sha256,
                                                          int64_t offset);
  // Fills the next chunk (the first carries the total size and digest); false when the whole
  // blob has been given. DATA_LOSS when the file is short or its digest does not match.
  absl::StatusOr<bool> Next(v1::Chunk* chunk);

 private:
  BlobReader() = default;
  std::string sha256_;
  std::ifstream in_;
  int64_t size_ = 0;
  int64_t offset_ = 0;
  bool first_ = true;
  Sha256 digest_;
};

// Streams a stored blob over a synchronous server stream (see BlobReader).
grpc::Status StreamBlob(const registry::Registry& registry, const std::string& sha256,
                        int64_t offset, grpc::ServerContext* context,
                        grpc::ServerWriter<v1::Chunk>* writer);

}  // namespace fedge::cloud::api

#endif  // FEDGE_CLOUD_API_BLOB_STREAM_H_
