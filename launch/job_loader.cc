#include "launch/job_loader.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "core/check.h"
#include "core/io/file.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/io/tokenizer.h"
#include "data/batch_source.h"
#include "model/config.h"
#include "google/protobuf/text_format.h"
#include "parallel/cost/cost_model.h"

namespace openmoe {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::EnumDescriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;

// Keeps the first parse error with its (1-based) position.
class FirstErrorCollector : public google::protobuf::io::ErrorCollector {
 public:
  void AddError(int line, google::protobuf::io::ColumnNumber column,
                const std::string& message) override {
    if (!has_error_) {
      has_error_ = true;
      line_ = line + 1;
      column_ = column + 1;
      message_ = message;
    }
  }
  bool has_error() const { return has_error_; }
  int line() const { return line_; }
  int column() const { return column_; }
  const std::string& message() const { return message_; }

 private:
  bool has_error_ = false;
  int line_ = 0, column_ = 0;
  std::string message_;
};

// Parses one text-format source into a fresh message; `where` prefixes the error.
absl::Status ParseText(const std::string& text, const std::string& where, JobSpec* out) {
  google::protobuf::TextFormat::Parser parser;
  FirstErrorCollector errors;
  parser.RecordErrorsTo(&errors);
  if (parser.ParseFromString(text, out)) return absl::OkStatus();
  if (!errors.has_error()) return absl::InvalidArgumentError(absl::StrCat(where, ": parse error"));
  return absl::InvalidArgumentError(
      absl::StrCat(where, ":", errors.line(), ":", errors.column(), ": ", errors.message()));
}

std::string EnumNames(const EnumDescriptor* e) {
  std::vector<std::string> names;
  for (int i = 0; i < e->value_count(); ++i) names.push_back(e->value(i)->name());
  return absl::StrJoin(names, ", ");
}

// Writes every unset singular field with its declared default, recursively.
void FillDefaults(Message* m) {
  const Descriptor* d = m->GetDescriptor();
  const Reflection* r = m->GetReflection();
  for (int i = 0; i < d->field_count(); ++i) {
    const FieldDescriptor* f = d->field(i);
    if (f->is_repeated() || f->containing_oneof() != nullptr) continue;
    if (f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
      FillDefaults(r->MutableMessage(m, f));
      continue;
    }
    if (r->HasField(*m, f)) continue;
    switch (f->cpp_type()) {
      case FieldDescriptor::CPPTYPE_INT32: r->SetInt32(m, f, f->default_value_int32()); break;
      case FieldDescriptor::CPPTYPE_INT64: r->SetInt64(m, f, f->default_value_int64()); break;
      case FieldDescriptor::CPPTYPE_UINT32: r->SetUInt32(m, f, f->default_value_uint32()); break;
      case FieldDescriptor::CPPTYPE_UINT64: r->SetUInt64(m, f, f->default_value_uint64()); break;
      case FieldDescriptor::CPPTYPE_DOUBLE: r->SetDouble(m, f, f->default_value_double()); break;
      case FieldDescriptor::CPPTYPE_FLOAT: r->SetFloat(m, f, f->default_value_float()); break;
      case FieldDescriptor::CPPTYPE_BOOL: r->SetBool(m, f, f->default_value_bool()); break;
      case FieldDescriptor::CPPTYPE_ENUM: r->SetEnum(m, f, f->default_value_enum()); break;
      case FieldDescriptor::CPPTYPE_STRING: r->SetString(m, f, f->default_value_string()); break;
      case FieldDescriptor::CPPTYPE_MESSAGE: break;
    }
  }
}

// Collects the problems ValidateJob finds, each already phrased with field names and values.
class Problems {
 public:
  void Add(std::string problem) { list_.push_back(std::move(problem)); }
  void AtLeast(const char* field, int64_t value, int64_t min) {
    if (value < min) Add(absl::StrFormat("%s=%d must be >= %d", field, value, min));
  }
  void Positive(const char* field, double value) {
    if (!(value > 0)) Add(absl::StrFormat("%s=%g must be > 0", field, value));
  }
  void NonNegative(const char* field, double value) {
    if (!(value >= 0)) Add(absl::StrFormat("%s=%g must be >= 0", field, value));
  }
  // `num` (named `num_desc`) must be a multiple of `den` (named `den_desc`); only checked when
  // both are positive (the sizes themselves are checked separately).
  void Divisible(const std::string& num_desc, int64_t num, const std::string& den_desc,
                 int64_t den) {
    if (num > 0 && den > 0 && num % den != 0)
      Add(absl::StrFormat("%s=%d is not divisible by %s=%d", num_desc, num, den_desc, den));
  }
  // `field` must be <= `max` (sizes that code casts to int32 or passes to BLAS as blasint).
  void AtMost(const char* field, int64_t value, int64_t max) {
    if (value > max) Add(absl::StrFormat("%s=%d must be <= %d", field, value, max));
  }
  // `value` (a float or double) must lie in [lo, hi].
  void InRange(const char* field, double value, double lo, double hi) {
    if (!(value >= lo && value <= hi))
      Add(absl::StrFormat("%s=%g must be in [%g, %g]", field, value, lo, hi));
  }
  bool empty() const { return list_.empty(); }
  std::string Join() const { return absl::StrJoin(list_, "; "); }

 private:
  std::vector<std::string> list_;
};

// Largest size code may cast to int (BLAS dimensions, MPI counts, loop indices).
constexpr int64_t kMaxInt32 = 2147483647;

// Every float and double the spec sets, at any depth and in repeated fields, must be finite: a NaN
// passes no `x > 0` check yet an inf passes all of them, and an inf turned into an integer (the
// expert capacity) is undefined. Unset fields hold their (finite) declared defaults.
void NonFiniteProblems(const Message& m, const std::string& prefix, Problems* p) {
  const Reflection* r = m.GetReflection();
  std::vector<const FieldDescriptor*> fields;
  r->ListFields(m, &fields);
  for (const FieldDescriptor* f : fields) {
    const std::string name = prefix.empty() ? f->name() : absl::StrCat(prefix, ".", f->name());
    const int n = f->is_repeated() ? r->FieldSize(m, f) : 1;
    for (int i = 0; i < n; ++i) {
      const std::string at = f->is_repeated() ? absl::StrCat(name, "[", i, "]") : name;
      double value = 0;
      switch (f->cpp_type()) {
        case FieldDescriptor::CPPTYPE_MESSAGE:
          NonFiniteProblems(f->is_repeated() ? r->GetRepeatedMessage(m, f, i) : r->GetMessage(m, f),
                            at, p);
          continue;
        case FieldDescriptor::CPPTYPE_DOUBLE:
          value = f->is_repeated() ? r->GetRepeatedDouble(m, f, i) : r->GetDouble(m, f);
          break;
        case FieldDescriptor::CPPTYPE_FLOAT:
          value = f->is_repeated() ? r->GetRepeatedFloat(m, f, i) : r->GetFloat(m, f);
          break;
        default:
          continue;
      }
      if (!std::isfinite(value)) p->Add(absl::StrFormat("%s=%g must be finite", at, value));
    }
  }
}

// A product of named sizes, checked for int64 overflow (and, when `limit` > 0, against it):
// `what (a=1 * b=2 * ...) = N overflows int64`. Returns the product, or -1 after adding a
// problem. Factors < 1 yield -1 without a problem (the size checks report those).
int64_t CheckedProduct(Problems* p, const std::string& what,
                       const std::vector<std::pair<std::string, int64_t>>& factors,
                       int64_t limit = 0, const std::string& limit_reason = "") {
  std::vector<std::string> names;
  int64_t product = 1;
  bool overflow = false;
  for (const auto& [name, value] : factors) {
    if (value < 1) return -1;
    names.push_back(absl::StrCat(name, "=", value));
    if (!overflow && __builtin_mul_overflow(product, value, &product)) overflow = true;
  }
  const std::string expr = absl::StrJoin(names, " * ");
  if (overflow) {
    p->Add(absl::StrCat(what, " (", expr, ") overflows int64"));
    return -1;
  }
  if (limit > 0 && product > limit) {
    p->Add(absl::StrCat(what, " (", expr, ") = ", product, " exceeds ", limit, " (", limit_reason,
                        ")"));
    return -1;
  }
  return product;
}

// Ranges of the float fields and the int32 bounds and int64 products of the sizes: everything
// that has to hold before ParamLayout, the plan or the Trainer may compute or allocate sizes.
void SizeProblems(const JobSpec& spec, Problems* p) {
  const ModelConfig& m = spec.model();
  const RouterConfig& r = spec.router();
  const TrainConfig& tr = spec.train();
  const TopologyConfig& t = spec.topology();
  const bool moe = m.num_experts() > 0;

  // Float ranges (finiteness is checked for every field by NonFiniteProblems; signs by the rules
  // of ValidateJob). The model casts rms_norm_eps and rope_base to float: outside these they
  // become 0 or inf.
  if (m.rms_norm_eps() > 0) p->InRange("model.rms_norm_eps", m.rms_norm_eps(), 1e-30, 1.0);
  if (m.rope_base() > 0) p->InRange("model.rope_base", m.rope_base(), 1.0, 1e30);

  // Sizes that reach int32 (BLAS blasint dimensions, MPI counts, `int` indices).
  p->AtMost("model.vocab_size", m.vocab_size(), kMaxInt32);
  p->AtMost("model.vocab_pad_multiple", m.vocab_pad_multiple(), kMaxInt32);
  p->AtMost("model.num_layers", m.num_layers(), 10000);  // ParamLayout lists every tensor
  p->AtMost("model.d_model", m.d_model(), kMaxInt32);
  p->AtMost("model.num_heads", m.num_heads(), kMaxInt32);
  p->AtMost("model.head_dim", m.head_dim(), kMaxInt32);
  p->AtMost("model.d_ff", m.d_ff(), kMaxInt32 / 2);  // OpenMoE's wi_0 is (d, 2 * d_ff)
  p->AtMost("model.expert_d_ff", m.expert_d_ff(), kMaxInt32 / 2);
  p->AtMost("model.num_experts", m.num_experts(), kMaxInt32);
  p->AtMost("model.num_shared_experts", m.num_shared_experts(), kMaxInt32);
  p->AtMost("router.top_k", r.top_k(), kMaxInt32);
  p->AtMost("router.group_size", r.group_size(), kMaxInt32);
  p->AtMost("router.min_capacity", r.min_capacity(), kMaxInt32);
  p->AtMost("train.batch_rows", tr.batch_rows(), kMaxInt32);
  p->AtMost("train.seq_len", tr.seq_len(), kMaxInt32);
  p->AtMost("train.microbatches", tr.microbatches(), kMaxInt32);
  p->AtMost("train.threads", tr.threads(), 4096);  // cast to int for OpenBLAS
  p->AtMost("topology.num_chips", t.num_chips(), kMaxInt32);
  p->AtMost("topology.torus_x", t.torus_x(), kMaxInt32);
  p->AtMost("topology.torus_y", t.torus_y(), kMaxInt32);
  p->AtMost("topology.chips_per_host", t.chips_per_host(), kMaxInt32);
  p->AtMost("mesh.expert_parallel", spec.mesh().expert_parallel(), kMaxInt32);
  p->AtMost("logging.position_buckets", spec.logging().position_buckets(), kMaxInt32);
  if (!p->empty()) return;  // the products below assume the bounds

  // Parameter counts: every tensor and the whole model in int64.
  const int64_t pad = std::max<int64_t>(1, m.vocab_pad_multiple());
  const int64_t vocab = (m.vocab_size() + pad - 1) / pad * pad;
  const int64_t d = m.d_model();
  const int64_t expert_d_ff = m.expert_d_ff() > 0 ? m.expert_d_ff() : m.d_ff();
  const int64_t attn = CheckedProduct(p, "attention width",
                                      {{"model.num_heads", m.num_heads()},
                                       {"model.head_dim", m.head_dim()}},
                                      kMaxInt32, "a matrix dimension must fit int32");
  const int64_t embed = CheckedProduct(
      p, "embedding parameters", {{"padded model.vocab_size", vocab}, {"model.d_model", d}});
  const int64_t attn_params =
      CheckedProduct(p, "attention parameters per layer",
                     {{"4", 4}, {"model.d_model", d}, {"model.num_heads", m.num_heads()},
                      {"model.head_dim", m.head_dim()}});
  const int64_t ffn_params = CheckedProduct(
      p, "FFN parameters per layer", {{"3", 3}, {"model.d_model", d}, {"model.d_ff", m.d_ff()}});
  int64_t expert_params = 0;
  if (moe) {
    expert_params = CheckedProduct(p, "expert parameters per layer",
                                   {{"3", 3},
                                    {"model.num_experts", m.num_experts()},
                                    {"model.d_model", d},
                                    {"expert d_ff", expert_d_ff}});
  }
  // The shared experts are one FFN of hidden S x expert d_ff (OpenMoE's wi_0 twice as wide).
  int64_t shared_d_ff = 0;
  if (moe && m.num_shared_experts() > 0) {
    shared_d_ff = CheckedProduct(
        p, "the shared experts' hidden size",
        {{"model.num_shared_experts", m.num_shared_experts()}, {"expert d_ff", expert_d_ff}},
        kMaxInt32 / 2, "a matrix dimension must fit int32");
  }
  if (embed > 0 && attn_params > 0 && ffn_params > 0 && expert_params >= 0 && attn > 0 &&
      shared_d_ff >= 0) {
    // In double: only an upper bound is needed, and 2^62 leaves room for norms and routers.
    const double total =
        2.0 * static_cast<double>(embed) +
        static_cast<double>(m.num_layers()) *
            (static_cast<double>(attn_params) + 2.0 * static_cast<double>(ffn_params) +
             static_cast<double>(expert_params) +
             4.0 * static_cast<double>(d) * static_cast<double>(shared_d_ff));
    if (total > 4.6e18) {
      p->Add(absl::StrFormat(
          "the model has ~%.3g parameters (model.num_layers=%d, model.d_model=%d, model.d_ff=%d, "
          "model.num_experts=%d, model.vocab_size=%d): its size overflows int64",
          total, m.num_layers(), d, m.d_ff(), m.num_experts(), m.vocab_size()));
    }
  }

  // Tokens and attention scores.
  CheckedProduct(p, "tokens per step",
                 {{"train.batch_rows", tr.batch_rows()}, {"train.seq_len", tr.seq_len()}});
  CheckedProduct(p, "attention scores per step",
                 {{"train.batch_rows", tr.batch_rows()},
                  {"model.num_heads", m.num_heads()},
                  {"train.seq_len", tr.seq_len()},
                  {"train.seq_len", tr.seq_len()}});
  if (t.num_chips() > 0 && tr.microbatches() > 0) {
    // The rows of every activation matrix of one chip's microbatch are a BLAS dimension.
    const int64_t slices = t.num_chips() * tr.microbatches();
    const int64_t rows = tr.batch_rows() / std::max<int64_t>(1, slices);
    CheckedProduct(p, "tokens per chip per microbatch",
                   {{"train.batch_rows / (topology.num_chips * train.microbatches)", rows},
                    {"train.seq_len", tr.seq_len()}},
                   kMaxInt32, "a matrix dimension must fit int32");
  }

  // Expert capacity and the capacity buffers (E x C rows of d_model per routing group).
  if (moe && r.group_size() > 0) {
    for (const auto& [name, factor] :
         {std::pair<const char*, double>{"router.capacity_factor", r.capacity_factor()},
          std::pair<const char*, double>{"router.eval_capacity_factor", r.eval_capacity_factor()}}) {
      const double raw = factor * static_cast<double>(r.group_size()) /
                         static_cast<double>(m.num_experts());
      if (!(raw <= static_cast<double>(kMaxInt32))) {
        p->Add(absl::StrFormat(
            "expert capacity %s=%g * router.group_size=%d / model.num_experts=%d = %g exceeds %d",
            name, factor, r.group_size(), m.num_experts(), raw, kMaxInt32));
        continue;
      }
      const int64_t capacity = r.dropless() ? r.group_size()
                                            : std::max<int64_t>(r.min_capacity(),
                                                                static_cast<int64_t>(raw + 0.5));
      const int64_t slots =
          CheckedProduct(p, absl::StrCat("capacity buffer rows (", name, ")"),
                         {{"model.num_experts", m.num_experts()}, {"expert capacity", capacity}},
                         kMaxInt32, "a matrix dimension must fit int32");
      if (slots > 0) {
        // Rows of d_model (dispatch, combine) and of the expert hidden layer (2 * d_ff wide).
        CheckedProduct(p, absl::StrCat("capacity buffer elements (", name, ")"),
                       {{"model.num_experts * capacity", slots},
                        {"max(model.d_model, 2 * expert d_ff)", std::max(d, 2 * expert_d_ff)}});
      }
    }
  }
}

// Whether a parsed job file sets anything: a file of comments, whitespace or empty messages
// (`model { }`) does not.
bool SetsAnyField(const Message& m) {
  const Reflection* r = m.GetReflection();
  std::vector<const FieldDescriptor*> fields;
  r->ListFields(m, &fields);
  for (const FieldDescriptor* f : fields) {
    if (f->cpp_type() != FieldDescriptor::CPPTYPE_MESSAGE || f->is_repeated()) return true;
    if (SetsAnyField(r->GetMessage(m, f))) return true;
  }
  return false;
}

}  // namespace

std::string JobDescription(const std::vector<std::string>& job_files,
                           const std::vector<std::string>& sets) {
  std::string out = job_files.empty() ? "defaults" : absl::StrJoin(job_files, ", ");
  for (const std::string& s : sets) absl::StrAppend(&out, " --set ", s);
  return out;
}

absl::Status ApplySet(const std::string& assignment, JobSpec* spec) {
  const size_t eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--set ", assignment, ": expected field.path=value"));
  }
  const std::string path = assignment.substr(0, eq);
  const std::string value = assignment.substr(eq + 1);
  const std::string where = absl::StrCat("--set ", path);
  const std::vector<std::string> parts = absl::StrSplit(path, '.');

  const Descriptor* message = JobSpec::descriptor();
  const FieldDescriptor* field = nullptr;
  std::string resolved;  // the path so far, for messages
  for (size_t i = 0; i < parts.size(); ++i) {
    const std::string owner = resolved.empty() ? "the job spec" : resolved;
    if (field != nullptr) {
      if (field->cpp_type() != FieldDescriptor::CPPTYPE_MESSAGE) {
        return absl::InvalidArgumentError(absl::StrCat(
            where, ": ", resolved, " is not a message, it has no field \"", parts[i], "\""));
      }
      message = field->message_type();
    }
    field = message->FindFieldByName(parts[i]);
    if (field == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": unknown field \"", parts[i],
                                                     "\" in ", owner, " (", message->name(), ")"));
    }
    if (field->is_repeated()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": repeated fields cannot be set with --set"));
    }
    absl::StrAppend(&resolved, resolved.empty() ? "" : ".", parts[i]);
  }
  if (field->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, ": is a message (", field->message_type()->name(), "); set one of its fields, e.g. ",
        path, ".", field->message_type()->field(0)->name(), "=..."));
  }

  std::string literal;
  if (field->cpp_type() == FieldDescriptor::CPPTYPE_STRING) {
    literal = absl::StrCat("\"", absl::CEscape(value), "\"");
  } else {
    // Only a single token: keeps `--set train.steps=1 seed: 3` from setting a second field.
    if (value.empty() || value.find_first_of(" \t\n{}:;,#<>[]\"'") != std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": \"", value, "\" is not a valid ", field->type_name(), " value"));
    }
    if (field->cpp_type() == FieldDescriptor::CPPTYPE_ENUM) {
      int64_t number;
      if (field->enum_type()->FindValueByName(value) == nullptr &&
          !absl::SimpleAtoi(value, &number)) {
        return absl::InvalidArgumentError(absl::StrCat(where, ": ", field->enum_type()->name(),
                                                       " has no value ", value, " (",
                                                       EnumNames(field->enum_type()), ")"));
      }
    }
    literal = value;
  }
  std::string text;
  for (size_t i = 0; i + 1 < parts.size(); ++i) absl::StrAppend(&text, parts[i], " { ");
  absl::StrAppend(&text, parts.back(), ": ", literal);
  for (size_t i = 0; i + 1 < parts.size(); ++i) text += " }";

  JobSpec update;
  google::protobuf::TextFormat::Parser parser;
  FirstErrorCollector errors;
  parser.RecordErrorsTo(&errors);
  if (!parser.ParseFromString(text, &update)) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, "=", value, ": ", errors.has_error() ? errors.message() : "invalid value"));
  }
  spec->MergeFrom(update);
  return absl::OkStatus();
}

namespace {

// The routers after OpenMoE (model/router.h): their ranges and the combinations that mean nothing.
void RouterVariantProblems(const RouterConfig& r, int64_t num_experts, Problems* p) {
  p->NonNegative("router.bias_update_rate", r.bias_update_rate());
  p->AtLeast("router.num_expert_groups", r.num_expert_groups(), 1);
  p->AtLeast("router.groups_per_token", r.groups_per_token(), 1);
  const int64_t groups = r.num_expert_groups();
  if (groups >= 1 && num_experts % groups != 0) {
    p->Add(absl::StrFormat("router.num_expert_groups=%d does not divide model.num_experts=%d",
                           groups, num_experts));
  } else if (groups >= 1 && r.groups_per_token() >= 1) {
    if (r.groups_per_token() > groups) {
      p->Add(absl::StrFormat("router.groups_per_token=%d exceeds router.num_expert_groups=%d",
                             r.groups_per_token(), groups));
    } else if (r.top_k() > r.groups_per_token() * (num_experts / groups)) {
      p->Add(absl::StrFormat(
          "router.top_k=%d exceeds the %d experts of router.groups_per_token=%d groups", r.top_k(),
          r.groups_per_token() * (num_experts / groups), r.groups_per_token()));
    }
  }
  if (r.selection() != EXPERTS_CHOOSE) return;
  const char* what = nullptr;
  if (r.normalize_top_k()) what = "router.normalize_top_k (tokens have no top_k)";
  if (r.bias_update_rate() > 0) what = "router.bias_update_rate (experts choose: balanced)";
  if (groups > 1) what = "router.num_expert_groups > 1 (tokens do not choose groups)";
  if (r.load_balance_scope() != GROUP) what = "router.load_balance_scope (no load-balance loss)";
  if (r.token_id_routing_after_steps() > 0) what = "router.token_id_routing_after_steps";
  if (what != nullptr) p->Add(absl::StrCat("router.selection=EXPERTS_CHOOSE does not take ", what));
}

}  // namespace

absl::Status ValidateJob(const JobSpec& spec, const std::string& job_description) {
  Problems p;
  const ModelConfig& m = spec.model();
  const RouterConfig& r = spec.router();
  const TopologyConfig& t = spec.topology();
  const MeshConfig& mesh = spec.mesh();
  const TrainConfig& tr = spec.train();
  const bool moe = m.num_experts() > 0;
  const std::string job = job_description.empty() ? "defaults" : job_description;

  // Finite floats, int32-bounded sizes and int64 products first, and alone: the rules below
  // multiply and divide these sizes.
  NonFiniteProblems(spec, "", &p);
  if (p.empty()) SizeProblems(spec, &p);
  if (!p.empty()) return absl::InvalidArgumentError(absl::StrCat("job (", job, "): ", p.Join()));

  // Model sizes.
  p.AtLeast("model.vocab_size", m.vocab_size(), 2);
  p.AtLeast("model.vocab_pad_multiple", m.vocab_pad_multiple(), 1);
  p.AtLeast("model.num_layers", m.num_layers(), 1);
  p.AtLeast("model.d_model", m.d_model(), 1);
  p.AtLeast("model.num_heads", m.num_heads(), 1);
  p.AtLeast("model.head_dim", m.head_dim(), 1);
  if (m.head_dim() > 0 && m.head_dim() % 2 != 0)
    p.Add(
        absl::StrFormat("model.head_dim=%d must be even (RoPE rotates two halves)", m.head_dim()));
  p.AtLeast("model.d_ff", m.d_ff(), 1);
  p.AtLeast("model.num_experts", m.num_experts(), 0);
  p.AtLeast("model.expert_d_ff", m.expert_d_ff(), 0);
  p.AtLeast("model.num_shared_experts", m.num_shared_experts(), 0);
  if (!moe && m.num_shared_experts() > 0) {
    p.Add(absl::StrFormat(
        "model.num_shared_experts=%d needs MoE layers (model.num_experts=%d; a dense model's FFN "
        "is model.d_ff)",
        m.num_shared_experts(), m.num_experts()));
  }
  p.Positive("model.rms_norm_eps", m.rms_norm_eps());
  p.Positive("model.rope_base", m.rope_base());
  if (moe) {
    p.AtLeast("model.moe_interval", m.moe_interval(), 1);
    if (m.moe_interval() > m.num_layers() && m.num_layers() > 0) {
      p.Add(
          absl::StrFormat("model.moe_interval=%d > model.num_layers=%d leaves no MoE layer (use "
                          "model.num_experts=0 for a dense model)",
                          m.moe_interval(), m.num_layers()));
    }
  }

  // Router and losses.
  p.AtLeast("router.group_size", r.group_size(), 1);
  if (moe) {
    if (r.top_k() < 1 || r.top_k() > m.num_experts()) {
      p.Add(absl::StrFormat("router.top_k=%d must be in [1, model.num_experts=%d]", r.top_k(),
                            m.num_experts()));
    }
    p.Positive("router.capacity_factor", r.capacity_factor());
    p.Positive("router.eval_capacity_factor", r.eval_capacity_factor());
    p.AtLeast("router.min_capacity", r.min_capacity(), 0);
    p.NonNegative("router.aux_loss_weight", r.aux_loss_weight());
    p.NonNegative("router.z_loss_weight", r.z_loss_weight());
    p.AtLeast("router.freeze_after_steps", r.freeze_after_steps(), 0);
    p.AtLeast("router.token_id_routing_after_steps", r.token_id_routing_after_steps(), 0);
    RouterVariantProblems(r, m.num_experts(), &p);
  }
  p.NonNegative("loss.output_z_loss_weight", spec.loss().output_z_loss_weight());
  // The exchange of MoE layer L needs layer L's attention output; what could overlap it is the
  // next microbatch's attention, and it is measured not to pay here (README "Multi-node:
  // communication behind compute"): the exchange overlaps the experts' own compute instead.
  if (spec.train().overlap_attention_all_to_all()) {
    p.Add("train.overlap_attention_all_to_all=true is not implemented in this trainer; "
          "train.expert_exchange_chunks overlaps the exchange with the experts' compute, and "
          "cost_model.overlap_all_to_all_with_attention models the overlap in openmoe plan");
  }

  // Topology and mesh.
  // The chips parallel/cost/cost_model.h has figures for: any other name would be costed as a v3.
  static constexpr const char* kCostModelChips[] = {"tpu_v3"};
  if (t.chip().empty()) {
    p.Add("topology.chip is empty (e.g. \"tpu_v3\")");
  } else if (std::find(std::begin(kCostModelChips), std::end(kCostModelChips), t.chip()) ==
             std::end(kCostModelChips)) {
    p.Add(absl::StrCat("topology.chip=\"", t.chip(), "\" is not a chip the cost model knows (",
                       absl::StrJoin(kCostModelChips, ", "), ")"));
  }
  p.AtLeast("topology.num_chips", t.num_chips(), 1);
  p.AtLeast("topology.chips_per_host", t.chips_per_host(), 1);
  const bool single_chip_torus = t.torus_x() == 0 && t.torus_y() == 0 && t.num_chips() == 1;
  if (!single_chip_torus) {
    p.AtLeast("topology.torus_x", t.torus_x(), 1);
    p.AtLeast("topology.torus_y", t.torus_y(), 1);
    if (t.num_chips() > 0 && t.torus_x() > 0 && t.torus_y() > 0 &&
        t.num_chips() != t.torus_x() * t.torus_y()) {
      p.Add(absl::StrFormat("topology.num_chips=%d != topology.torus_x=%d * topology.torus_y=%d",
                            t.num_chips(), t.torus_x(), t.torus_y()));
    }
  }
  if (t.num_chips() > t.chips_per_host())
    p.Divisible("topology.num_chips", t.num_chips(), "topology.chips_per_host", t.chips_per_host());
  p.AtLeast("mesh.expert_parallel", mesh.expert_parallel(), 1);
  p.AtLeast("mesh.model_parallel", mesh.model_parallel(), 1);
  if (moe)
    p.Divisible("model.num_experts", m.num_experts(), "mesh.expert_parallel",
                mesh.expert_parallel());
  p.Divisible("topology.num_chips", t.num_chips(), "mesh.expert_parallel", mesh.expert_parallel());
  if (mesh.model_parallel() > 1) {
    // Every chip of a model group holds an equal slice of heads, mlp columns and vocabulary.
    const ModelDims dims = DimsFromSpec(spec);
    const int64_t mp = mesh.model_parallel();
    p.Divisible("topology.num_chips", t.num_chips(), "mesh.model_parallel", mp);
    if (mesh.expert_parallel() >= 1 && t.num_chips() % mp == 0 &&
        t.num_chips() / mp % mesh.expert_parallel() != 0) {
      p.Add(absl::StrFormat(
          "mesh.expert_parallel=%d x mesh.model_parallel=%d must divide topology.num_chips=%d",
          mesh.expert_parallel(), mp, t.num_chips()));
    }
    p.Divisible("model.num_heads", m.num_heads(), "mesh.model_parallel", mp);
    p.Divisible("model.d_ff", m.d_ff(), "mesh.model_parallel", mp);
    if (moe) p.Divisible("model.expert_d_ff (or d_ff)", dims.expert_d_ff, "mesh.model_parallel", mp);
    if (dims.padded_vocab_size % mp != 0) {
      p.Add(absl::StrFormat(
          "the padded vocabulary (%d: model.vocab_size=%d rounded up to model.vocab_pad_multiple=%d) "
          "must be divisible by mesh.model_parallel=%d; raise vocab_pad_multiple",
          dims.padded_vocab_size, m.vocab_size(), m.vocab_pad_multiple(), mp));
    }
  }

  // Optimizer and schedule.
  const AdafactorConfig& o = spec.optimizer();
  p.Positive("optimizer.decay_exponent", o.decay_exponent());
  p.Positive("optimizer.epsilon1", o.epsilon1());
  p.NonNegative("optimizer.epsilon2", o.epsilon2());
  p.NonNegative("optimizer.clipping_threshold", o.clipping_threshold());
  p.AtLeast("optimizer.min_dim_size_to_factor", o.min_dim_size_to_factor(), 1);
  p.NonNegative("optimizer.global_norm_clip", o.global_norm_clip());
  p.Positive("schedule.peak_learning_rate", spec.schedule().peak_learning_rate());
  p.AtLeast("schedule.warmup_steps", spec.schedule().warmup_steps(), 1);
  {  // AdamW, the cosine schedule and router jitter.
    const AdamWConfig& a = spec.adamw();
    const ScheduleConfig& sc = spec.schedule();
    auto fraction = [&](const char* field, double v, bool open_top) {
      if (!(v >= 0 && (open_top ? v < 1 : v <= 1)))
        p.Add(absl::StrFormat("%s=%g must be in [0, 1%s", field, v, open_top ? ")" : "]"));
    };
    fraction("adamw.beta1", a.beta1(), true);
    fraction("adamw.beta2", a.beta2(), true);
    p.Positive("adamw.epsilon", a.epsilon());
    p.NonNegative("adamw.weight_decay", a.weight_decay());
    fraction("schedule.final_learning_rate_fraction", sc.final_learning_rate_fraction(), false);
    p.AtLeast("schedule.decay_steps", sc.decay_steps(), 0);
    const int64_t decay = sc.decay_steps() > 0 ? sc.decay_steps() : spec.train().steps();
    if (sc.kind() == SCHEDULE_WARMUP_COSINE && sc.warmup_steps() > decay)
      p.Add(absl::StrFormat("schedule.warmup_steps=%d must be <= the cosine's end %d "
                            "(schedule.decay_steps, or train.steps when it is 0)",
                            sc.warmup_steps(), decay));
    fraction("router.jitter_noise", spec.router().jitter_noise(), true);
  }

  // Batch: whole rows per data shard and microbatch; whole routing groups per shard. A data shard
  // is a chip, or with a model axis the chips of one model group (they hold the same rows).
  p.AtLeast("train.steps", tr.steps(), 0);
  p.AtLeast("train.batch_rows", tr.batch_rows(), 1);
  p.AtLeast("train.seq_len", tr.seq_len(), 2);
  p.AtLeast("train.microbatches", tr.microbatches(), 1);
  p.AtLeast("train.threads", tr.threads(), 0);
  if (!(tr.grad_bucket_mb() > 0) || !std::isfinite(tr.grad_bucket_mb())) {
    p.Add(absl::StrFormat("train.grad_bucket_mb=%g must be a positive, finite size in MiB",
                          tr.grad_bucket_mb()));
  }
  p.AtLeast("train.expert_exchange_chunks", tr.expert_exchange_chunks(), 1);
  p.AtMost("train.expert_exchange_chunks", tr.expert_exchange_chunks(), 1024);
  const int64_t mp = mesh.model_parallel() >= 1 ? mesh.model_parallel() : 1;
  if (t.num_chips() > 0 && tr.microbatches() > 0 && t.num_chips() % mp == 0) {
    const int64_t shards = t.num_chips() / mp;
    const std::string shards_desc =
        mp == 1 ? absl::StrFormat("topology.num_chips=%d", t.num_chips())
                : absl::StrFormat("data shards (topology.num_chips=%d / mesh.model_parallel=%d)",
                                  t.num_chips(), mp);
    const int64_t slices = shards * tr.microbatches();
    p.Divisible("train.batch_rows", tr.batch_rows(),
                mp == 1 ? absl::StrFormat("topology.num_chips * train.microbatches (%d * %d)",
                                          t.num_chips(), tr.microbatches())
                        : absl::StrFormat("data shards * train.microbatches (%d * %d)", shards,
                                          tr.microbatches()),
                slices);
    if (moe && tr.batch_rows() > 0 && tr.seq_len() > 0 && tr.batch_rows() % slices == 0) {
      const int64_t tokens = tr.batch_rows() / slices * tr.seq_len();
      if (r.group_size() > 0 && tokens % r.group_size() != 0) {
        p.Add(absl::StrFormat(
            "tokens per %s per microbatch (train.batch_rows=%d * train.seq_len=%d / "
            "(%s * train.microbatches=%d)) = %d is not divisible by router.group_size=%d (a "
            "routing group never spans two %ss)",
            mp == 1 ? "chip" : "data shard", tr.batch_rows(), tr.seq_len(), shards_desc,
            tr.microbatches(), tokens, r.group_size(), mp == 1 ? "chip" : "data shard"));
      }
    }
  }

  // Data, checkpoints, logging.
  for (std::string& problem : DataConfigProblems(spec)) p.Add(std::move(problem));
  const int64_t branching = spec.data().synthetic().branching();
  if (branching < 1 || (m.vocab_size() >= 1 && branching > m.vocab_size())) {
    p.Add(absl::StrFormat("data.synthetic.branching=%d must be in [1, model.vocab_size=%d]",
                          branching, m.vocab_size()));
  }
  const CheckpointConfig& c = spec.checkpoint();
  p.AtLeast("checkpoint.every_steps", c.every_steps(), 0);
  p.AtLeast("checkpoint.keep_last", c.keep_last(), 1);
  if (c.resume().empty())
    p.Add("checkpoint.resume is empty (auto, never, or a checkpoint directory)");
  if (c.every_steps() > 0 && c.dir().empty())
    p.Add(absl::StrFormat("checkpoint.every_steps=%d needs checkpoint.dir", c.every_steps()));
  p.AtLeast("logging.print_every", spec.logging().print_every(), 1);
  p.AtLeast("logging.position_buckets", spec.logging().position_buckets(), 1);
  if (tr.seq_len() > 0 && spec.logging().position_buckets() > tr.seq_len()) {
    p.Add(absl::StrFormat("logging.position_buckets=%d > train.seq_len=%d",
                          spec.logging().position_buckets(), tr.seq_len()));
  }

  const absl::Status cost = ValidateCostModel(spec.cost_model());
  if (!cost.ok()) p.Add(std::string(cost.message()));
  const CostModelConfig& cm = spec.cost_model();
  if (cm.encoder_layers() != 0 &&
      (cm.encoder_layers() < 0 || cm.encoder_layers() >= spec.model().num_layers())) {
    p.Add(absl::StrFormat("cost_model.encoder_layers=%d must be in [0, model.num_layers=%d)",
                          cm.encoder_layers(), spec.model().num_layers()));
  } else if (cm.encoder_layers() > 0 &&
             (cm.decoder_target_length() < 1 || cm.decoder_target_length() > tr.seq_len())) {
    p.Add(absl::StrFormat("cost_model.decoder_target_length=%d must be in [1, train.seq_len=%d]",
                          cm.decoder_target_length(), tr.seq_len()));
  }

  if (p.empty()) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      "job (", job_description.empty() ? "defaults" : job_description, "): ", p.Join()));
}

absl::StatusOr<JobSpec> LoadJob(const std::vector<std::string>& job_files,
                                const std::vector<std::string>& sets, bool allow_defaults) {
  JobSpec spec;
  for (const std::string& path : job_files) {
    auto text = ReadFile(path);
    if (!text.ok()) {
      return absl::Status(absl::IsNotFound(text.status()) ? absl::StatusCode::kNotFound
                                                          : absl::StatusCode::kInvalidArgument,
                          absl::StrCat("job file ", text.status().message()));
    }
    JobSpec file_spec;
    OPENMOE_RETURN_IF_ERROR(ParseText(*text, path, &file_spec));
    // An empty file (a truncated copy, a wrong path to a placeholder) would silently train the
    // defaults.
    if (!allow_defaults && !SetsAnyField(file_spec)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "job file ", path,
          ": sets no field (empty, or only comments); pass --allow_defaults to run the defaults"));
    }
    spec.MergeFrom(file_spec);
  }
  for (const std::string& s : sets) OPENMOE_RETURN_IF_ERROR(ApplySet(s, &spec));
  OPENMOE_RETURN_IF_ERROR(ValidateJob(spec, JobDescription(job_files, sets)));
  return spec;
}

std::string DescribeJob(const JobSpec& spec) {
  JobSpec full = spec;
  FillDefaults(&full);
  google::protobuf::TextFormat::Printer printer;
  std::string out;
  printer.PrintToString(full, &out);
  return out;
}

}  // namespace openmoe
