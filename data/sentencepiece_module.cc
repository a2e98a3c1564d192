// libopenmoe_spm.so: sentencepiece behind the plain interface of spm_api.h. See spm_api.h for why
// this is a separately loaded module. Include no abseil or protobuf header here.
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "data/spm_api.h"

namespace {

using sentencepiece::SentencePieceProcessor;

const SentencePieceProcessor* Proc(const void* p) {
  return static_cast<const SentencePieceProcessor*>(p);
}

void* Load(const std::string& serialized, std::string* error) {
  auto* p = new SentencePieceProcessor();
  const auto status = p->LoadFromSerializedProto(serialized);
  if (!status.ok()) {
    *error = status.ToString();
    delete p;
    return nullptr;
  }
  return p;
}

void Release(void* p) { delete static_cast<SentencePieceProcessor*>(p); }
int PieceSize(const void* p) { return Proc(p)->GetPieceSize(); }

int PieceToId(const void* p, const std::string& piece) {
  const int id = Proc(p)->PieceToId(piece);
  // Unknown pieces map to unk_id; tell them apart from the unk piece itself.
  if (id == Proc(p)->unk_id() && Proc(p)->IdToPiece(id) != piece) return -1;
  return id;
}

std::string IdToPiece(const void* p, int id) { return Proc(p)->IdToPiece(id); }
int EosId(const void* p) { return Proc(p)->eos_id(); }
int UnkId(const void* p) { return Proc(p)->unk_id(); }

bool Encode(const void* p, const char* text, size_t size, std::vector<int>* ids,
            std::string* error) {
  const auto status = Proc(p)->Encode(std::string_view(text, size), ids);
  if (!status.ok()) *error = status.ToString();
  return status.ok();
}

bool Decode(const void* p, const std::vector<int>& ids, std::string* text, std::string* error) {
  const auto status = Proc(p)->Decode(ids, text);
  if (!status.ok()) *error = status.ToString();
  return status.ok();
}

class VectorIterator : public sentencepiece::SentenceIterator {
 public:
  explicit VectorIterator(const std::vector<std::string>& v) : v_(v) {}
  bool done() const override { return i_ >= v_.size(); }
  void Next() override { ++i_; }
  const std::string& value() const override { return v_[i_]; }
  sentencepiece::util::Status status() const override { return {}; }

 private:
  const std::vector<std::string>& v_;
  size_t i_ = 0;
};

bool Train(const std::vector<std::pair<std::string, std::string>>& flags,
           const std::vector<std::string>& sentences, std::string* model, std::string* error) {
  std::unordered_map<std::string, std::string> kwargs(flags.begin(), flags.end());
  VectorIterator it(sentences);
  const auto status = sentencepiece::SentencePieceTrainer::Train(kwargs, &it, model);
  if (!status.ok()) *error = status.ToString();
  return status.ok();
}

constexpr openmoe::spm::Api kApi = {
    openmoe::spm::kApiVersion,
    Load,
    Release,
    PieceSize,
    PieceToId,
    IdToPiece,
    EosId,
    UnkId,
    Encode,
    Decode,
    Train,
};

}  // namespace

extern "C" __attribute__((visibility("default"))) const openmoe::spm::Api* openmoe_spm_api() {
  return &kApi;
}
