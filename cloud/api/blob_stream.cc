#include "cloud/api/blob_stream.h"

#include <algorithm>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "common/metrics/metrics.h"
#include "common/tensor/sha256.h"

namespace fedge::cloud::api {
namespace {

prometheus::Counter& StreamedBytes() {
  static auto& c = metrics::CounterFamily("fedge_cloud_artifact_sent_bytes_total",
                                          "Artifact bytes streamed to clients in chunks.")
                       .Add({});
  return c;
}

}  // namespace

grpc::Status StreamBlob(const registry::Registry& registry, const std::string& sha256,
                        int64_t offset, grpc::ServerContext* context,
                        grpc::ServerWriter<v1::Chunk>* writer) {
  if (!IsSha256Hex(sha256)) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        absl::StrCat("'", sha256, "' is not a sha256 digest"));
  }
  if (!registry.HasBlob(sha256)) {
    return grpc::Status(grpc::StatusCode::NOT_FOUND,
                        absl::StrCat("no artifact with digest ", sha256));
  }
  std::ifstream in(registry.BlobPath(sha256), std::ios::binary);
  in.seekg(0, std::ios::end);
  const int64_t size = static_cast<int64_t>(in.tellg());
  if (!in || offset < 0 || offset > size) {
    return grpc::Status(grpc::StatusCode::OUT_OF_RANGE,
                        absl::StrCat("offset ", offset, " is outside the artifact (", size,
                                     " bytes)"));
  }
  in.seekg(offset);
  bool first = true;
  std::string buf;
  while (offset < size || first) {
    if (context->IsCancelled()) return grpc::Status(grpc::StatusCode::CANCELLED, "cancelled");
    const int64_t n = std::min(kChunkBytes, size - offset);
    buf.resize(static_cast<size_t>(n));
    in.read(buf.data(), n);
    if (in.gcount() != n) {
      return grpc::Status(grpc::StatusCode::DATA_LOSS, "artifact file is shorter than expected");
    }
    v1::Chunk chunk;
    chunk.set_offset(offset);
    chunk.set_data(buf);
    if (first) {
      chunk.set_total_size(size);
      chunk.set_sha256(sha256);
      first = false;
    }
    if (!writer->Write(chunk)) return grpc::Status(grpc::StatusCode::CANCELLED, "client gone");
    StreamedBytes().Increment(static_cast<double>(n));
    offset += n;
  }
  return grpc::Status::OK;
}

}  // namespace fedge::cloud::api
