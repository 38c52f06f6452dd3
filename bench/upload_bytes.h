#ifndef FEDGE_BENCH_UPLOAD_BYTES_H_
#define FEDGE_BENCH_UPLOAD_BYTES_H_

// Upload bytes as they cross the wire: the serialized UploadRequest messages that carry one
// update (the header, then one chunk message per 1 MiB of payload, as edge/agent sends them).

#include <algorithm>
#include <cstdint>
#include <string>

#include "fedge/v1/fleet.pb.h"

namespace fedge::bench {

inline constexpr int64_t kUploadChunkBytes = 1 << 20;

inline int64_t UploadWireBytes(const v1::UpdateHeader& header) {
  v1::UploadRequest first;
  *first.mutable_header() = header;
  int64_t bytes = static_cast<int64_t>(first.ByteSizeLong());
  for (int64_t off = 0; off < header.total_size(); off += kUploadChunkBytes) {
    v1::UploadRequest chunk;
    chunk.mutable_chunk()->set_offset(off);
    chunk.mutable_chunk()->set_data(
        std::string(static_cast<size_t>(std::min(kUploadChunkBytes, header.total_size() - off)),
                    '\0'));
    bytes += static_cast<int64_t>(chunk.ByteSizeLong());
  }
  return bytes;
}

}  // namespace fedge::bench

#endif  // FEDGE_BENCH_UPLOAD_BYTES_H_
