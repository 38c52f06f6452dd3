// The token file format, secrets and the token store (common/auth).

#include <fstream>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/auth/token_store.h"
#include "common/auth/tokens.h"
#include "gtest/gtest.h"
#include "tests/testing/fixtures.h"

namespace fedge::auth {
namespace {

// sha256("abc") from FIPS 180-2, appendix B.1: an independent check of the hashing.
constexpr char kAbcHash[] =
    "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

void WriteFile(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::trunc) << text;
}

TEST(TokensTest, HashFieldIsSha256OfTheSecretInHex) { EXPECT_EQ(HashField("abc"), kAbcHash); }

TEST(TokensTest, ParsesRolesCommentsAndBlankLines) {
  auto entries = ParseTokenFile(
      absl::StrCat("# fedge admin tokens\n\nalice admin ", kAbcHash, "\n  bob\tviewer ",
                   HashField("b"), "  \nci-bot operator ", HashField("c"), "\n"),
      "tokens");
  ASSERT_TRUE(entries.ok()) << entries.status();
  ASSERT_EQ(entries->size(), 3u);
  EXPECT_EQ((*entries)[0].name, "alice");
  EXPECT_EQ((*entries)[0].role, Role::kAdmin);
  EXPECT_EQ((*entries)[1].name, "bob");
  EXPECT_EQ((*entries)[1].role, Role::kViewer);
  EXPECT_EQ((*entries)[2].role, Role::kOperator);
  EXPECT_EQ((*entries)[0].sha256.size(), 32u);
}

// Each malformed line is refused with the file, the line number, the problem and the fix.
TEST(TokensTest, RefusesMalformedLinesNamingTheLine) {
  const std::string good = absl::StrCat("alice admin ", kAbcHash, "\n");
  struct Case {
    std::string bad_line;
    std::string problem;
  };
  const Case cases[] = {
      {"bob viewer", "expected 3 fields, found 2"},
      {absl::StrCat("bob root ", kAbcHash), "unknown role 'root'"},
      {absl::StrCat("-bob viewer ", kAbcHash), "token name '-bob' is invalid"},
      {"bob viewer fedge_plaintextsecret", "is not sha256: followed by 64 lowercase hex"},
      {"bob viewer sha256:abc", "is not sha256:"},
      {absl::StrCat("bob viewer sha256:", std::string(64, 'G')), "is not sha256:"},
      {absl::StrCat("alice viewer ", HashField("x")), "token name 'alice' appears twice"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.bad_line);
    auto entries = ParseTokenFile(absl::StrCat("# header\n", good, c.bad_line, "\n"), "/etc/t");
    ASSERT_FALSE(entries.ok());
    EXPECT_EQ(entries.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_TRUE(absl::StartsWith(entries.status().message(), "/etc/t:3: "))
        << entries.status().message();
    EXPECT_TRUE(absl::StrContains(entries.status().message(), c.problem))
        << entries.status().message();
    EXPECT_TRUE(absl::StrContains(entries.status().message(), "fedgectl tokens create"))
        << entries.status().message();
  }
}

TEST(TokensTest, GeneratedSecretsAreLongAndDistinct) {
  auto a = GenerateSecret();
  auto b = GenerateSecret();
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_TRUE(absl::StartsWith(*a, "fedge_"));
  EXPECT_EQ(a->size(), 6u + 43u);  // 32 bytes in unpadded base64url
  EXPECT_NE(*a, *b);
  EXPECT_EQ(
      a->find_first_not_of("fedge_ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-"),
      std::string::npos);
}

TEST(TokensTest, TokenLineParsesBackToTheSecretsHash) {
  auto line = TokenLine("ci-bot", Role::kOperator, "abc");
  EXPECT_EQ(line, absl::StrCat("ci-bot operator ", kAbcHash));
  auto entries = ParseTokenFile(line, "x");
  ASSERT_TRUE(entries.ok()) << entries.status();
  EXPECT_EQ((*entries)[0].role, Role::kOperator);
}

TEST(TokensTest, ParseBearerTakesAnyCaseOfTheScheme) {
  EXPECT_EQ(*ParseBearer("Bearer abc"), "abc");
  EXPECT_EQ(*ParseBearer("bearer  abc "), "abc");
  EXPECT_EQ(ParseBearer("Basic abc").status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(ParseBearer("Bearer ").status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(ParseBearer("abc").status().code(), absl::StatusCode::kUnauthenticated);
}

TEST(TokensTest, RolesAreNested) {
  EXPECT_TRUE(RoleAllows(Role::kAdmin, Role::kOperator));
  EXPECT_TRUE(RoleAllows(Role::kOperator, Role::kViewer));
  EXPECT_TRUE(RoleAllows(Role::kViewer, Role::kViewer));
  EXPECT_FALSE(RoleAllows(Role::kViewer, Role::kOperator));
  EXPECT_FALSE(RoleAllows(Role::kOperator, Role::kAdmin));
}

class TokenStoreTest : public ::testing::Test {
 protected:
  std::unique_ptr<TokenStore> Open(const std::string& text) {
    WriteFile(path_, text);
    TokenStore::Options o;
    o.path = path_;
    o.check_interval = absl::ZeroDuration();  // look at the file on every call
    auto store = TokenStore::Open(o);
    EXPECT_TRUE(store.ok()) << store.status();
    return store.ok() ? std::move(*store) : nullptr;
  }
  testing::TempDir dir_;
  std::string path_ = dir_.path() + "/tokens";
};

TEST_F(TokenStoreTest, LooksUpBySecret) {
  auto store = Open(absl::StrCat("alice admin ", kAbcHash, "\n"));
  auto p = store->Lookup("abc");
  ASSERT_TRUE(p.has_value());
  EXPECT_EQ(p->name, "alice");
  EXPECT_EQ(p->role, Role::kAdmin);
  EXPECT_FALSE(store->Lookup("abd").has_value());
  EXPECT_FALSE(store->Lookup(kAbcHash).has_value());  // the hash itself is not a secret
  EXPECT_FALSE(store->Lookup("").has_value());
}

TEST_F(TokenStoreTest, DeletingALineRevokesTheToken) {
  auto store = Open(absl::StrCat("alice admin ", kAbcHash, "\nbob viewer ", HashField("b")));
  ASSERT_TRUE(store->Lookup("b").has_value());
  WriteFile(path_, absl::StrCat("alice admin ", kAbcHash, "\n"));
  EXPECT_FALSE(store->Lookup("b").has_value());
  EXPECT_TRUE(store->Lookup("abc").has_value());
}

TEST_F(TokenStoreTest, ABrokenRewriteKeepsThePreviousTokens) {
  auto store = Open(absl::StrCat("alice admin ", kAbcHash, "\n"));
  WriteFile(path_, "alice admin not-a-hash\n");
  EXPECT_FALSE(store->Reload().ok());
  EXPECT_TRUE(store->Lookup("abc").has_value());
  EXPECT_EQ(store->size(), 1u);
}

TEST_F(TokenStoreTest, OpenRefusesAMalformedFileNamingTheLine) {
  WriteFile(path_, "\n\nalice admin\n");
  auto store = TokenStore::Open({path_});
  ASSERT_FALSE(store.ok());
  EXPECT_TRUE(absl::StartsWith(store.status().message(), path_ + ":3: "))
      << store.status().message();
}

TEST_F(TokenStoreTest, OpenRefusesAMissingFile) {
  auto store = TokenStore::Open({path_ + ".missing"});
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(absl::StrContains(store.status().message(), "--admin_tokens_file"));
}

}  // namespace
}  // namespace fedge::auth
