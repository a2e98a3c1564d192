// Number and string formatting shared by the `openmoe plan` printers (plan.h, layout_search.h),
// in a namespace of its own (launch/metrics.h has a JsonNumber of its own in openmoe).
#pragma once

#include <cstdint>
#include <string>

namespace openmoe::plan_format {

// 1234567 -> "1,234,567".
std::string WithCommas(int64_t v);
// 1234567 -> "1.23M" (decimal units, for counts and FLOPs).
std::string Short(double v);
// 1536 -> "1.50 KiB".
std::string Bytes(int64_t b);
// A JSON string literal, quotes and escapes included.
std::string JsonString(const std::string& s);
// Round-trip exact ("%.17g").
std::string JsonNumber(double v);
// (123e12, "FLOP/s") -> "123 TFLOP/s"; (82e9, "B/s") -> "82 GB/s".
std::string WithUnit(double v, const std::string& unit);
// 0.0123 -> "12.3 ms".
std::string Seconds(double s);

}  // namespace openmoe::plan_format
