#include "data/zstd_io.h"

#include <unistd.h>
#include <zstd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace openmoe {

std::string CompressZstd(std::string_view bytes, int level) {
  std::string out(ZSTD_compressBound(bytes.size()), '\0');
  const size_t n = ZSTD_compress(out.data(), out.size(), bytes.data(), bytes.size(), level);
  out.resize(ZSTD_isError(n) ? 0 : n);
  return out;
}

absl::StatusOr<std::string> DecompressZstd(std::string_view bytes, const std::string& name) {
  if (bytes.empty()) return absl::DataLossError(absl::StrCat(name, ": empty file, not zstd data"));
  std::unique_ptr<ZSTD_DCtx, size_t (*)(ZSTD_DCtx*)> dctx(ZSTD_createDCtx(), ZSTD_freeDCtx);
  std::string out;
  const unsigned long long known = ZSTD_getFrameContentSize(bytes.data(), bytes.size());
  if (known != ZSTD_CONTENTSIZE_UNKNOWN && known != ZSTD_CONTENTSIZE_ERROR && known < (1ull << 36))
    out.reserve(known);
  ZSTD_inBuffer in{bytes.data(), bytes.size(), 0};
  std::string chunk(ZSTD_DStreamOutSize(), '\0');
  size_t last = 1;
  // Input is handed over in small feeds: on error the decoder does not move in.pos, so the end of
  // the current feed is where (to within a feed) the damage was seen.
  constexpr size_t kFeed = 4096;
  while (in.pos < bytes.size()) {
    in.size = std::min(bytes.size(), in.pos + kFeed);
    ZSTD_outBuffer o{chunk.data(), chunk.size(), 0};
    last = ZSTD_decompressStream(dctx.get(), &o, &in);
    if (ZSTD_isError(last))
      return absl::DataLossError(absl::StrCat(name, ": corrupt zstd data near compressed byte ",
                                              in.size, " (", ZSTD_getErrorName(last), ")"));
    out.append(chunk.data(), o.pos);
  }
  // Flush whatever the last input still holds.
  while (last != 0) {
    ZSTD_outBuffer o{chunk.data(), chunk.size(), 0};
    last = ZSTD_decompressStream(dctx.get(), &o, &in);
    if (ZSTD_isError(last))
      return absl::DataLossError(
          absl::StrCat(name, ": corrupt zstd data (", ZSTD_getErrorName(last), ")"));
    out.append(chunk.data(), o.pos);
    if (o.pos == 0 && last != 0)
      return absl::DataLossError(
          absl::StrCat(name, ": truncated zstd data (the last frame does not end, after ",
                       bytes.size(), " compressed bytes)"));
  }
  return out;
}

absl::StatusOr<std::unique_ptr<ZstdFileWriter>> ZstdFileWriter::Create(const std::string& path,
                                                                       int level) {
  std::unique_ptr<ZstdFileWriter> w(new ZstdFileWriter());
  w->path_ = path;
  w->tmp_ = absl::StrCat(path, ".tmp", getpid());
  w->file_ = std::fopen(w->tmp_.c_str(), "wb");
  if (w->file_ == nullptr)
    return absl::PermissionDeniedError(
        absl::StrCat(w->tmp_, ": cannot create (", std::strerror(errno), ")"));
  ZSTD_CCtx* cctx = ZSTD_createCCtx();
  ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, level);
  ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 1);
  w->cctx_ = cctx;
  return w;
}

ZstdFileWriter::~ZstdFileWriter() {
  if (file_ != nullptr) {
    std::fclose(file_);
    unlink(tmp_.c_str());
  }
  if (cctx_ != nullptr) ZSTD_freeCCtx(static_cast<ZSTD_CCtx*>(cctx_));
}

absl::Status ZstdFileWriter::Write(std::string_view bytes) {
  pending_.append(bytes);
  if (pending_.size() < (1u << 20)) return absl::OkStatus();
  return Drain(false);
}

absl::Status ZstdFileWriter::Drain(bool end) {
  auto* cctx = static_cast<ZSTD_CCtx*>(cctx_);
  std::string out(ZSTD_CStreamOutSize(), '\0');
  ZSTD_inBuffer in{pending_.data(), pending_.size(), 0};
  const ZSTD_EndDirective mode = end ? ZSTD_e_end : ZSTD_e_continue;
  while (true) {
    ZSTD_outBuffer o{out.data(), out.size(), 0};
    const size_t left = ZSTD_compressStream2(cctx, &o, &in, mode);
    if (ZSTD_isError(left))
      return absl::InternalError(absl::StrCat(path_, ": zstd: ", ZSTD_getErrorName(left)));
    if (o.pos > 0 && std::fwrite(out.data(), 1, o.pos, file_) != o.pos)
      return absl::DataLossError(absl::StrCat(tmp_, ": write failed"));
    if (end ? left == 0 : in.pos == in.size) break;
  }
  pending_.clear();
  return absl::OkStatus();
}

absl::Status ZstdFileWriter::Close() {
  if (auto s = Drain(true); !s.ok()) return s;
  std::FILE* f = file_;
  file_ = nullptr;
  if (std::fflush(f) != 0 || fsync(fileno(f)) != 0 || std::fclose(f) != 0) {
    unlink(tmp_.c_str());
    return absl::DataLossError(absl::StrCat(tmp_, ": flush failed"));
  }
  if (std::rename(tmp_.c_str(), path_.c_str()) != 0)
    return absl::DataLossError(absl::StrCat(path_, ": rename failed (", std::strerror(errno), ")"));
  return absl::OkStatus();
}

}  // namespace openmoe
