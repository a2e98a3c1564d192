// The boundary between openmoe and Debian's libsentencepiece.
//
// Why a boundary: libsentencepiece.so bundles its own copy of protobuf 3.14 (and exports it), and
// its headers declare `absl::string_view` in a way that clashes with the system abseil. Linked
// into a binary that also uses protobuf 3.21, one of the two protobuf copies always binds to the
// other's symbols and aborts. So sentencepiece lives in its own shared module
// (libopenmoe_spm.so, built from sentencepiece_module.cc, which includes no abseil and no
// protobuf header), which data/tokenizer.cc dlopens with RTLD_DEEPBIND: inside the module,
// sentencepiece's symbols resolve to its own protobuf first. The module is not linked to
// libprotobuf, and no openmoe binary links libsentencepiece directly.
//
// Only standard-library types cross the boundary (both sides are built by the same compiler and
// share libstdc++). Functions returning bool set *error on failure.
#pragma once

#include <cstddef>
#include <string>
#include <utility>
#include <vector>

namespace openmoe::spm {

inline constexpr int kApiVersion = 1;

struct Api {
  int version;
  // Loads a serialized ModelProto; returns a processor handle, or null with *error set.
  void* (*load)(const std::string& serialized_model, std::string* error);
  void (*release)(void* processor);
  int (*piece_size)(const void* processor);
  // The id of `piece`, or -1 when the model has no such piece.
  int (*piece_to_id)(const void* processor, const std::string& piece);
  std::string (*id_to_piece)(const void* processor, int id);
  int (*eos_id)(const void* processor);
  int (*unk_id)(const void* processor);
  // Thread-safe on one processor.
  bool (*encode)(const void* processor, const char* text, size_t size, std::vector<int>* ids,
                 std::string* error);
  bool (*decode)(const void* processor, const std::vector<int>& ids, std::string* text,
                 std::string* error);
  // Trains a model on `sentences` with sentencepiece trainer flags given as name -> value
  // (e.g. {"model_type", "unigram"}); the serialized model goes to *model.
  bool (*train)(const std::vector<std::pair<std::string, std::string>>& flags,
                const std::vector<std::string>& sentences, std::string* model, std::string* error);
};

}  // namespace openmoe::spm

// The module's single exported symbol.
extern "C" const openmoe::spm::Api* openmoe_spm_api();
