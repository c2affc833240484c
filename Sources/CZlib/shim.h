// zlib (Debian's zlib1g-dev): gzip for gRPC and Connect messages.
#include <zlib.h>
