// Checks for broken invariants: they abort with file and line. User input (files, job specs,
// command lines) never reaches these; it is validated at the edges and reported as absl::Status.
#pragma once

#include <cstdio>
#include <cstdlib>

#define OPENMOE_CHECK(cond)                                                        \
  do {                                                                             \
    if (!(cond)) {                                                                 \
      std::fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                \
    }                                                                              \
  } while (0)

#define OPENMOE_CHECK_MSG(cond, ...)                                              \
  do {                                                                            \
    if (!(cond)) {                                                                \
      std::fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, __LINE__, #cond); \
      std::fprintf(stderr, __VA_ARGS__);                                          \
      std::fprintf(stderr, "\n");                                                 \
      std::abort();                                                               \
    }                                                                             \
  } while (0)

// Returns from the enclosing function if `expr` (an absl::Status) is not OK.
#define OPENMOE_RETURN_IF_ERROR(expr)            \
  do {                                           \
    ::absl::Status openmoe_status_ = (expr);     \
    if (!openmoe_status_.ok()) return openmoe_status_; \
  } while (0)

#define OPENMOE_CONCAT_INNER(a, b) a##b
#define OPENMOE_CONCAT(a, b) OPENMOE_CONCAT_INNER(a, b)
// OPENMOE_ASSIGN_OR_RETURN(auto x, MakeX()): unwraps an absl::StatusOr or returns its status.
#define OPENMOE_ASSIGN_OR_RETURN(lhs, expr) \
  OPENMOE_ASSIGN_OR_RETURN_IMPL(OPENMOE_CONCAT(openmoe_statusor_, __LINE__), lhs, expr)
#define OPENMOE_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                  \
  if (!tmp.ok()) return tmp.status();                 \
  lhs = std::move(tmp).value()
