#ifndef FEDGE_FUZZ_TARGETS_TARGETS_H_
#define FEDGE_FUZZ_TARGETS_TARGETS_H_

#include <cstddef>
#include <cstdint>

// The fuzz targets' entry functions, shared by the libFuzzer binaries in fuzz/ and by the
// regression test that replays fuzz/corpus and fuzz/regressions in every build. Each takes any
// bytes, returns 0, and aborts (with a message on stderr) when the code under test breaks one
// of its documented rules; a crash inside the code under test is a finding too.

namespace fedge::fuzz {

// codec::Decode, DecodeInto, Inspect and AccumulateInto of one payload. The first 6 bytes pick
// the encoding, block size, top-k fraction, element count (at most 4096) and weight.
int FuzzCodec(const uint8_t* data, size_t size);
// data::ParseCsv; the first byte picks the label column and whether labels have names.
int FuzzCsv(const uint8_t* data, size_t size);
// cloud::api::UploadStage fed a sequence of (offset, data) chunks through AddChunk, in memory
// or through a part file, with a resume from the part for some inputs.
int FuzzUploadChunks(const uint8_t* data, size_t size);
// The REST gateway's reading of a request: the first byte picks an Admin method, the rest is
// the body.
int FuzzRestJson(const uint8_t* data, size_t size);
// cloud::models::ContractFromJson, then CheckContract and a JSON round trip.
int FuzzContract(const uint8_t* data, size_t size);

}  // namespace fedge::fuzz

#endif  // FEDGE_FUZZ_TARGETS_TARGETS_H_
