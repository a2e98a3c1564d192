#include "core/io/zstd.h"

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

ZstdCompressor::ZstdCompressor(const Options& options, Sink sink)
    : cctx_(ZSTD_createCCtx()),
      name_(options.name),
      sink_(std::move(sink)),
      out_(ZSTD_CStreamOutSize(), '\0') {
  auto* cctx = static_cast<ZSTD_CCtx*>(cctx_);
  ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, options.level);
  if (options.frame_checksum) ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 1);
  if (options.pledged_size >= 0)
    ZSTD_CCtx_setPledgedSrcSize(cctx, static_cast<unsigned long long>(options.pledged_size));
}

ZstdCompressor::~ZstdCompressor() { ZSTD_freeCCtx(static_cast<ZSTD_CCtx*>(cctx_)); }

absl::Status ZstdCompressor::Write(std::string_view bytes) { return Run(bytes, false); }

absl::Status ZstdCompressor::End() { return Run({}, true); }

absl::Status ZstdCompressor::Run(std::string_view bytes, bool end) {
  auto* cctx = static_cast<ZSTD_CCtx*>(cctx_);
  ZSTD_inBuffer in{bytes.data(), bytes.size(), 0};
  const ZSTD_EndDirective mode = end ? ZSTD_e_end : ZSTD_e_continue;
  while (true) {
    ZSTD_outBuffer o{out_.data(), out_.size(), 0};
    const size_t left = ZSTD_compressStream2(cctx, &o, &in, mode);
    if (ZSTD_isError(left))
      return absl::InternalError(
          absl::StrCat(name_, ": zstd compression failed (", ZSTD_getErrorName(left), ")"));
    if (o.pos > 0) {
      if (absl::Status s = sink_(std::string_view(out_.data(), o.pos)); !s.ok()) return s;
    }
    if (end ? left == 0 : in.pos == in.size) return absl::OkStatus();
  }
}

ZstdDecompressor::ZstdDecompressor() : dctx_(ZSTD_createDCtx()) {}

ZstdDecompressor::~ZstdDecompressor() { ZSTD_freeDCtx(static_cast<ZSTD_DCtx*>(dctx_)); }

size_t ZstdDecompressor::InputChunkSize() { return ZSTD_DStreamInSize(); }

size_t ZstdDecompressor::OutputChunkSize() { return ZSTD_DStreamOutSize(); }

absl::StatusOr<size_t> ZstdDecompressor::Decode(std::string_view* in, char* out,
                                                size_t out_size) {
  ZSTD_inBuffer i{in->data(), in->size(), 0};
  ZSTD_outBuffer o{out, out_size, 0};
  const size_t r = ZSTD_decompressStream(static_cast<ZSTD_DCtx*>(dctx_), &o, &i);
  if (ZSTD_isError(r)) return absl::DataLossError(ZSTD_getErrorName(r));
  in->remove_prefix(i.pos);
  frame_left_ = r;
  return o.pos;
}

absl::StatusOr<std::string> DecompressZstd(std::string_view bytes, const std::string& name) {
  if (bytes.empty()) return absl::DataLossError(absl::StrCat(name, ": empty file, not zstd data"));
  ZstdDecompressor decoder;
  std::string out;
  const unsigned long long known = ZSTD_getFrameContentSize(bytes.data(), bytes.size());
  if (known != ZSTD_CONTENTSIZE_UNKNOWN && known != ZSTD_CONTENTSIZE_ERROR && known < (1ull << 36))
    out.reserve(known);
  std::string chunk(ZstdDecompressor::OutputChunkSize(), '\0');
  // Input is handed over in small feeds: on error the decoder does not consume any of it, so the
  // end of the current feed is where (to within a feed) the damage was seen.
  constexpr size_t kFeed = 4096;
  size_t pos = 0;
  while (pos < bytes.size()) {
    const size_t feed_end = std::min(bytes.size(), pos + kFeed);
    std::string_view feed = bytes.substr(pos, feed_end - pos);
    absl::StatusOr<size_t> n = decoder.Decode(&feed, chunk.data(), chunk.size());
    if (!n.ok())
      return absl::DataLossError(absl::StrCat(name, ": corrupt zstd data near compressed byte ",
                                              feed_end, " (", n.status().message(), ")"));
    pos = feed_end - feed.size();
    out.append(chunk.data(), *n);
  }
  // Flush whatever the last input still holds.
  while (decoder.frame_left() != 0) {
    std::string_view none;
    absl::StatusOr<size_t> n = decoder.Decode(&none, chunk.data(), chunk.size());
    if (!n.ok())
      return absl::DataLossError(
          absl::StrCat(name, ": corrupt zstd data (", n.status().message(), ")"));
    out.append(chunk.data(), *n);
    if (*n == 0 && decoder.frame_left() != 0)
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
  ZstdFileWriter* self = w.get();
  w->compressor_ = std::make_unique<ZstdCompressor>(
      ZstdCompressor::Options{.name = path, .level = level, .frame_checksum = true},
      [self](std::string_view bytes) {
        if (std::fwrite(bytes.data(), 1, bytes.size(), self->file_) != bytes.size())
          return absl::DataLossError(absl::StrCat(self->tmp_, ": write failed"));
        return absl::OkStatus();
      });
  return w;
}

ZstdFileWriter::~ZstdFileWriter() {
  if (file_ != nullptr) {
    std::fclose(file_);
    unlink(tmp_.c_str());
  }
}

absl::Status ZstdFileWriter::Compress(bool end) {
  absl::Status s = compressor_->Write(pending_);
  pending_.clear();
  if (s.ok() && end) s = compressor_->End();
  return s;
}

absl::Status ZstdFileWriter::Write(std::string_view bytes) {
  pending_.append(bytes);
  if (pending_.size() < (1u << 20)) return absl::OkStatus();
  return Compress(false);
}

absl::Status ZstdFileWriter::Close() {
  if (absl::Status s = Compress(true); !s.ok()) return s;
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
