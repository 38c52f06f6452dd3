// libFuzzer's entry point for one target; FEDGE_FUZZ_ENTRY names its function in targets.h.
#include <cstddef>
#include <cstdint>

#include "fuzz/targets/targets.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return fedge::fuzz::FEDGE_FUZZ_ENTRY(data, size);
}
