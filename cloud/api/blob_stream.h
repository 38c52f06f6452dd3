#ifndef FEDGE_CLOUD_API_BLOB_STREAM_H_
#define FEDGE_CLOUD_API_BLOB_STREAM_H_

#include <cstdint>
#include <string>

#include "cloud/registry/registry.h"
#include "fedge/v1/model.pb.h"
#include "grpcpp/server_context.h"
#include "grpcpp/support/sync_stream.h"

namespace fedge::cloud::api {

// The largest chunk either side sends: 1 MiB, well under gRPC's default 4 MiB message limit.
inline constexpr int64_t kChunkBytes = 1 << 20;

// Streams a stored blob from `offset` in chunks of at most kChunkBytes. The first chunk carries
// the total size and digest, so the receiver can verify the whole and resume from an offset.
grpc::Status StreamBlob(const registry::Registry& registry, const std::string& sha256,
                        int64_t offset, grpc::ServerContext* context,
                        grpc::ServerWriter<v1::Chunk>* writer);

}  // namespace fedge::cloud::api

#endif  // FEDGE_CLOUD_API_BLOB_STREAM_H_
