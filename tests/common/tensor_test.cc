#include <cmath>
#include <limits>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/status/grpc_status.h"
#include "common/tensor/f32.h"
#include "common/tensor/flat.h"
#include "common/tensor/sha256.h"
#include "gtest/gtest.h"

namespace fedge {
namespace {

TEST(Sha256Test, MatchesKnownDigest) {
  // FIPS 180-2 example.
  EXPECT_EQ(Sha256Hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  Sha256 incremental;
  incremental.Update("a");
  incremental.Update("bc");
  EXPECT_EQ(incremental.HexDigest(), Sha256Hex("abc"));
  EXPECT_TRUE(IsSha256Hex(Sha256Hex("")));
  EXPECT_FALSE(IsSha256Hex("ABC"));
}

Schema TwoTensors() {
  return Schema{{TensorSpec{"w", {2, 3}}, TensorSpec{"b", {3}}}};
}

TEST(SchemaTest, HashDependsOnNamesShapesAndOrder) {
  Schema a = TwoTensors();
  EXPECT_EQ(a.NumElements(), 9);
  Schema renamed = a;
  renamed.tensors[1].name = "bias";
  Schema reshaped = a;
  reshaped.tensors[0].shape = {3, 2};
  Schema reordered{{a.tensors[1], a.tensors[0]}};
  EXPECT_NE(a.Hash(), renamed.Hash());
  EXPECT_NE(a.Hash(), reshaped.Hash());
  EXPECT_NE(a.Hash(), reordered.Hash());
  EXPECT_EQ(a.Hash(), TwoTensors().Hash());
  EXPECT_EQ(Schema::FromProto(a.ToProto()).Hash(), a.Hash());
  EXPECT_EQ(a.ToProto().hash(), a.Hash());
}

TEST(F32Test, RoundTripsAndRefusesWrongSize) {
  FlatTensor v = {1.5f, -2.0f, 3.25f};
  auto decoded = DecodeF32(EncodeF32(v), 3);
  ASSERT_TRUE(decoded.ok());
  EXPECT_EQ(*decoded, v);
  auto short_payload = DecodeF32(EncodeF32(v).substr(0, 11), 3);
  EXPECT_EQ(short_payload.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(DecodeF32(EncodeF32(v), 4).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(CheckFiniteTest, NamesTheTensorHoldingNaN) {
  Schema s = TwoTensors();
  FlatTensor v(9, 0.5f);
  EXPECT_TRUE(CheckFinite(v, s).ok());
  v[7] = std::numeric_limits<float>::quiet_NaN();
  absl::Status st = CheckFinite(v, s);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("'b'"), std::string::npos) << st;
  v[7] = std::numeric_limits<float>::infinity();
  EXPECT_FALSE(CheckFinite(v, s).ok());
}

TEST(AllFiniteTest, FindsNaNAndInfinityAnywhere) {
  // Sizes and positions around the scan's 4096-value blocks; the largest finite float and
  // the smallest denormal are finite.
  FlatTensor v(3 * 4096 + 5, 1.0f);
  v[1] = std::numeric_limits<float>::max();
  v[2] = -std::numeric_limits<float>::denorm_min();
  EXPECT_TRUE(AllFinite(v));
  EXPECT_TRUE(AllFinite({}));
  const float bad[] = {std::numeric_limits<float>::quiet_NaN(),
                       std::numeric_limits<float>::infinity(),
                       -std::numeric_limits<float>::infinity()};
  for (float b : bad) {
    for (size_t at : {size_t{0}, size_t{4095}, size_t{4096}, v.size() - 1}) {
      FlatTensor w = v;
      w[at] = b;
      EXPECT_FALSE(AllFinite(w)) << b << " at " << at;
    }
  }
}

TEST(GrpcStatusTest, CodesMapOneToOne) {
  absl::Status st = absl::FailedPreconditionError("stale round");
  grpc::Status g = ToGrpcStatus(st);
  EXPECT_EQ(g.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(g.error_message(), "stale round");
  EXPECT_EQ(FromGrpcStatus(g), st);
}

TEST(GrpcStatusTest, AHugeMessageIsCutAndControlCharactersAreEscaped) {
  grpc::Status g =
      ToGrpcStatus(absl::InvalidArgumentError(absl::StrCat("id \x1b[2J", std::string(1 << 20, 'x'))));
  EXPECT_EQ(g.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_LT(g.error_message().size(), kMaxStatusMessage + 64);
  EXPECT_EQ(g.error_message().find('\x1b'), std::string::npos);
  EXPECT_EQ(g.error_message().rfind("id \\x1b[2Jxxx", 0), 0u) << g.error_message().substr(0, 20);
  EXPECT_NE(g.error_message().find("(message cut at 2048 bytes)"), std::string::npos);
  // Newlines stay: some messages list several problems, one a line.
  EXPECT_EQ(ToGrpcStatus(absl::InternalError("a\nb")).error_message(), "a\nb");
}

}  // namespace
}  // namespace fedge
