#include "common/status/quote.h"

#include <string>

#include "gtest/gtest.h"

namespace fedge {
namespace {

TEST(QuoteTest, ShortInputIsQuotedWhole) { EXPECT_EQ(Quote("site-1"), "\"site-1\""); }

TEST(QuoteTest, ControlCharactersAreEscapedSoNoLineCanBeForged) {
  const std::string q = Quote("a\nE1207 00:00:00 forged\x1b[2J");
  EXPECT_EQ(q.find('\n'), std::string::npos);
  EXPECT_EQ(q.find('\x1b'), std::string::npos);
  EXPECT_EQ(q, "\"a\\nE1207 00:00:00 forged\\x1b[2J\"");
}

TEST(QuoteTest, LongInputIsCutToAPrefixAndItsLengthIsNamed) {
  const std::string huge(1 << 20, 'x');
  const std::string q = Quote(huge, 8);
  EXPECT_EQ(q, "\"xxxxxxxx\"... (1048576 bytes)");
  // Whatever the bytes, the quote stays small: every byte escapes to at most four.
  const std::string binary(1 << 20, '\x01');
  EXPECT_LE(Quote(binary).size(), 4 * kQuotedPrefix + 32);
}

}  // namespace
}  // namespace fedge
