#include "common/auth/token_store.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "glog/logging.h"

namespace fedge::auth {

bool TokenStore::FileStamp::operator==(const FileStamp& o) const {
  return mtime_ns == o.mtime_ns && size == o.size && inode == o.inode && device == o.device;
}

absl::StatusOr<std::unique_ptr<TokenStore>> TokenStore::Open(Options options) {
  std::unique_ptr<TokenStore> store(new TokenStore(std::move(options)));
  FileStamp stamp;
  auto tokens = store->Read(&stamp);
  if (!tokens.ok()) return tokens.status();
  MutexLock lock(&store->mu_);
  store->tokens_ = std::move(*tokens);
  store->stamp_ = stamp;
  store->last_check_ = store->options_.clock->Now();
  return store;
}

absl::StatusOr<std::vector<TokenEntry>> TokenStore::Read(FileStamp* stamp) const {
  const std::string& path = options_.path;
  // stat() follows symlinks, so a Kubernetes Secret volume's atomic symlink swap is noticed.
  struct stat st;
  if (stat(path.c_str(), &st) != 0) {
    return absl::NotFoundError(absl::StrCat("cannot read the admin tokens file ", path, ": ",
                                            std::strerror(errno), " (check --admin_tokens_file)"));
  }
  stamp->mtime_ns = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  stamp->size = st.st_size;
  stamp->inode = st.st_ino;
  stamp->device = st.st_dev;
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(absl::StrCat("cannot read the admin tokens file ", path,
                                            " (check --admin_tokens_file and its permissions)"));
  }
  std::stringstream text;
  text << in.rdbuf();
  return ParseTokenFile(text.str(), path);
}

absl::Status TokenStore::Reload() {
  FileStamp stamp;
  auto tokens = Read(&stamp);
  MutexLock lock(&mu_);
  last_check_ = options_.clock->Now();
  if (!tokens.ok()) {
    LOG(ERROR) << "admin tokens not reloaded, keeping the " << tokens_.size()
               << " token(s) read before: " << tokens.status().message();
    // Remember the broken stamp so that the error is logged once, not on every call.
    stamp_ = stamp;
    return tokens.status();
  }
  if (!(stamp == stamp_)) {
    LOG(INFO) << "admin tokens reloaded from " << options_.path << ": " << tokens->size()
              << " token(s)";
  }
  tokens_ = std::move(*tokens);
  stamp_ = stamp;
  return absl::OkStatus();
}

void TokenStore::MaybeReload() {
  {
    MutexLock lock(&mu_);
    const absl::Time now = options_.clock->Now();
    if (now - last_check_ < options_.check_interval) return;
    last_check_ = now;
    struct stat st;
    FileStamp stamp;
    if (stat(options_.path.c_str(), &st) == 0) {
      stamp.mtime_ns = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
      stamp.size = st.st_size;
      stamp.inode = st.st_ino;
      stamp.device = st.st_dev;
    }
    if (stamp == stamp_) return;
  }
  (void)Reload();
}

std::optional<Principal> TokenStore::Lookup(absl::string_view secret) {
  MaybeReload();
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(secret.data()), secret.size(), digest);
  MutexLock lock(&mu_);
  std::optional<Principal> found;
  // Every entry is compared, in constant time, so timing tells nothing about the hashes.
  for (const TokenEntry& t : tokens_) {
    if (t.sha256.size() == sizeof(digest) &&
        CRYPTO_memcmp(t.sha256.data(), digest, sizeof(digest)) == 0 && !found) {
      found = Principal{t.name, t.role};
    }
  }
  return found;
}

size_t TokenStore::size() const {
  MutexLock lock(&mu_);
  return tokens_.size();
}

}  // namespace fedge::auth
