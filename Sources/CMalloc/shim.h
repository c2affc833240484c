// glibc's malloc extensions (malloc_trim), which the Glibc module of Swift does not export.
#include <malloc.h>
