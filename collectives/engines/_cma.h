/* Cross-memory copies for the engines' C parts (_reads_c.c, _swap.h of _express_c.c): the loop that
   transports/cma.py runs in Python, in pieces of its PIECE_BYTES, each piece one
   process_vm_readv or process_vm_writev. */

#ifndef COLLECTIVES_CMA_H
#define COLLECTIVES_CMA_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#define PIECE_BYTES ((size_t)4 << 20) /* bytes per syscall, as transports/cma.py */

/* Copy ``n`` bytes between my ``local`` and ``remote`` in process ``pid`` (``write``: to it,
   else from it): 1 done, 0 refused or cut short (the caller says why or copies otherwise). */
static int cma_copy(pid_t pid, int write, char *local, uint64_t remote, size_t n) {
    size_t done = 0;
    while (done < n) {
        size_t piece = n - done < PIECE_BYTES ? n - done : PIECE_BYTES;
        struct iovec mine = {local + done, piece}, theirs = {(void *)(uintptr_t)(remote + done), piece};
        ssize_t got = write ? process_vm_writev(pid, &mine, 1, &theirs, 1, 0) : process_vm_readv(pid, &mine, 1, &theirs, 1, 0);
        if (got <= 0) return 0;
        done += (size_t)got;
    }
    return 1;
}

#endif
