// libFuzzer's entry for programs with a main of their own (LLVM 11 and later). Only
// referenced by a build with -sanitize=fuzzer, which links libFuzzer (scripts/fuzz.sh).
#include <stddef.h>
#include <stdint.h>
int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*callback)(const uint8_t *data, size_t size));
