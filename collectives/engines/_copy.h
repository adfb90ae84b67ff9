/* ``dst = src`` as buffers.copy_array does it, for the engines' C parts (reads and small plans):
   4K-aliased copies of the sizes where memcpy is slow go by 8-byte words. */
#ifndef COLLECTIVES_COPY_H
#define COLLECTIVES_COPY_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define ALIASED_FROM ((size_t)192 << 10) /* buffers.ALIASED_COPY_BYTES */
#define ALIASED_TO ((size_t)512 << 10)

static void copy_bytes(char *dst, const char *src, size_t n) {
    size_t skew = (size_t)((uintptr_t)dst - (uintptr_t)src) % 4096;
    if (n < ALIASED_FROM || n >= ALIASED_TO || skew == 0 || skew >= 32) {
        memcpy(dst, src, n);
        return;
    }
    size_t whole = n - n % 8;
    for (size_t i = 0; i < whole; i += 8) {
        uint64_t word;
        memcpy(&word, src + i, 8);
        memcpy(dst + i, &word, 8);
    }
    memcpy(dst + whole, src + whole, n - whole);
}

#endif
