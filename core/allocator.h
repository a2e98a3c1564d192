// Process-wide allocator settings for long-running training processes. Call once, first thing in
// main, before any allocation of note. Not thread-safe; not collective.
#pragma once

namespace openmoe {

// Serves every allocation of 256 KiB or more by its own mapping, returned to the system when
// freed. glibc otherwise raises its mmap threshold after the first large frees (up to 32 MiB),
// after which a step's large temporaries come from the heap and stay resident when freed: the
// first training step's scratch left ~100 MiB of heap behind (tiny at 512 x 64 tokens).
void ReturnLargeFreesToTheSystem();

}  // namespace openmoe
