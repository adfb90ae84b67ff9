/* h29a: what one copy of n bytes costs, one core and both at once, against the 2-rank exchange's copies. */
#define _GNU_SOURCE
#include <immintrin.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int64_t now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec * 1000000000LL + t.tv_nsec; }
static volatile uint64_t *sh;  /* [0],[8]: barrier counters per rank; [16+..]: times */
static void barrier(int r, uint64_t k) {
    __atomic_store_n(&sh[r * 8], k, __ATOMIC_RELEASE);
    while (__atomic_load_n(&sh[(1 - r) * 8], __ATOMIC_ACQUIRE) < k) _mm_pause();
}
static void nt_copy(char *d, const char *s, size_t n) {
    size_t i = 0;
    for (; i + 64 <= n; i += 64) _mm512_stream_si512((void *)(d + i), _mm512_loadu_si512((const void *)(s + i)));
    memcpy(d + i, s + i, n - i);
    _mm_sfence();
}
static int cmp(const void *a, const void *b) { int64_t x = *(int64_t *)a, y = *(int64_t *)b; return x < y ? -1 : x > y; }
static pid_t peer;
static char *rings; static size_t ring_bytes = 4 << 20, chunk = 1 << 20;
/* Two copies through a shared ring a direction: mine in by chunks, the peer's out. */
static void staged(int r, char *mine, char *recv_theirs, size_t n, int nt_out, int nt_in) {
    char *out = rings + r * ring_bytes, *in = rings + (1 - r) * ring_bytes;
    volatile uint64_t *my_head = &sh[32 + r * 16], *their_head = &sh[32 + (1 - r) * 16];  /* bytes published */
    volatile uint64_t *my_tail = &sh[64 + r * 16], *their_tail = &sh[64 + (1 - r) * 16];  /* bytes consumed (of the in ring) */
    uint64_t base_h = *my_head, base_t = *my_tail;  /* running counters across calls */
    uint64_t base_ph = base_t;  /* the peer's head counts as my tail does */
    size_t sent = 0, got = 0;
    while (sent < n || got < n) {
        if (sent < n && base_h + sent - __atomic_load_n(their_tail, __ATOMIC_ACQUIRE) + chunk <= ring_bytes) {
            size_t c = n - sent < chunk ? n - sent : chunk;
            char *d = out + (base_h + sent) % ring_bytes;
            if (nt_in) nt_copy(d, mine + sent, c); else memcpy(d, mine + sent, c);
            sent += c; __atomic_store_n(my_head, base_h + sent, __ATOMIC_RELEASE);
        }
        if (got < n && __atomic_load_n(their_head, __ATOMIC_ACQUIRE) >= base_ph + got + (n - got < chunk ? n - got : chunk)) {
            size_t c = n - got < chunk ? n - got : chunk;
            char *s2 = in + (base_ph + got) % ring_bytes;
            if (nt_out) nt_copy(recv_theirs + got, s2, c); else memcpy(recv_theirs + got, s2, c);
            got += c; __atomic_store_n(my_tail, base_t + got, __ATOMIC_RELEASE);
        }
    }
}
static void cma(int w, char *l, char *r, size_t n) {
    for (size_t at = 0; at < n; at += 4 << 20) {
        size_t p = n - at < (4 << 20) ? n - at : (4 << 20);
        struct iovec a = {l + at, p}, b = {r + at, p};
        ssize_t g = w ? process_vm_writev(peer, &a, 1, &b, 1, 0) : process_vm_readv(peer, &a, 1, &b, 1, 0);
        if (g != (ssize_t)p) { perror("cma"); exit(1); }
    }
}
int main(int argc, char **argv) {
    size_t n = (size_t)(atof(argv[1]) * 1048576);  /* block per rank, MiB */
    const char *mode = argv[2]; int both = atoi(argv[3]), reps = atoi(argv[4]), written = argc > 5 ? atoi(argv[5]) : 0;
    if (getenv("CHUNK")) chunk = (size_t)atoi(getenv("CHUNK")) << 10;
    rings = mmap(0, 2 * ring_bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    memset(rings, 0, 2 * ring_bytes);
    sh = mmap(0, 4096 * 4, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    pid_t parent = getpid(), child = fork();
    int r = child == 0;
    peer = r ? parent : child;
    cpu_set_t c; CPU_ZERO(&c); CPU_SET(r, &c); sched_setaffinity(0, sizeof c, &c);
    /* Allocated after the fork (no copy-on-write pages shared), each rank its own; addresses swapped. */
    char *recv = aligned_alloc(2 << 20, 2 * n), *src = aligned_alloc(2 << 20, n), *dst = aligned_alloc(2 << 20, n);
    madvise(recv, 2 * n, MADV_HUGEPAGE); madvise(src, n, MADV_HUGEPAGE); madvise(dst, n, MADV_HUGEPAGE);
    memset(recv, 1, 2 * n); memset(src, 2, n); memset(dst, 3, n);
    sh[128 + r] = (uint64_t)(uintptr_t)recv;
    barrier(r, 1);
    char *peer_recv = (char *)(uintptr_t)sh[128 + 1 - r];
    int64_t *t = malloc(sizeof(int64_t) * reps);
    uint64_t k = 1;
    char *mine = recv + r * n, *theirs = recv + (1 - r) * n;
    char *p_mine = peer_recv + (1 - r) * n, *p_theirs = peer_recv + r * n; /* the peer's own block, its receive */
    char *bounce = aligned_alloc(4096, 256 << 10); memset(bounce, 0, 256 << 10);
    for (int i = 0; i < reps + 3; i++) {
        if (written) memcpy(mine, src, n);
        barrier(r, ++k);
        int64_t t0 = now();
        if (both || r == 0) {
            if (!strcmp(mode, "memcpy")) memcpy(dst, src, n);
            else if (!strcmp(mode, "nt")) nt_copy(dst, src, n);
            else if (!strcmp(mode, "repmovsb")) { void *d = dst; const void *s = src; size_t m = n; __asm__ volatile("rep movsb" : "+D"(d), "+S"(s), "+c"(m) : : "memory"); }
            else if (!strcmp(mode, "readv")) cma(0, theirs, p_mine, n);        /* MPICH: the peer's whole block */
            else if (!strcmp(mode, "halves")) {                               /* ours out of place */
                size_t h = n / 2, lo = r ? h : 0, hi = r ? n : h;
                cma(0, theirs + lo, p_mine + lo, hi - lo);
                cma(1, mine + lo, p_theirs + lo, hi - lo);
            } else if (!strcmp(mode, "bhalves") || !strcmp(mode, "bhalves_nt")) {  /* the read through a bounce in cache */
                size_t h = n / 2, lo = r ? h : 0, hi = r ? n : h, B = 256 << 10; int nt = mode[7] == '_';
                for (size_t at = lo; at < hi; at += B) {
                    size_t p = hi - at < B ? hi - at : B;
                    cma(0, bounce, p_mine + at, p);
                    cma(1, mine + at, p_theirs + at, p);
                    if (nt) nt_copy(theirs + at, bounce, p); else memcpy(theirs + at, bounce, p);
                }
            } else if (!strcmp(mode, "writev")) cma(1, mine, p_theirs, n);
            else if (!strcmp(mode, "writev256")) { for (size_t at = 0; at < n; at += 256 << 10) { size_t p = n - at < (256 << 10) ? n - at : (256 << 10); cma(1, mine + at, p_theirs + at, p); } }
            else if (!strcmp(mode, "staged")) staged(r, mine, theirs, n, 0, 0);
            else if (!strcmp(mode, "staged_ntout")) staged(r, mine, theirs, n, 1, 0);
            else if (!strcmp(mode, "staged_ntboth")) staged(r, mine, theirs, n, 1, 1);
            else if (!strcmp(mode, "movsb4k")) { for (size_t at = 0; at < n; at += 4096) { void *d = dst + at; const void *s3 = src + at; size_t m = 4096; __asm__ volatile("rep movsb" : "+D"(d), "+S"(s3), "+c"(m) : : "memory"); } }
        }
        barrier(r, ++k);
        if (i >= 3) t[i - 3] = now() - t0;
    }
    qsort(t, reps, sizeof *t, cmp);
    if (r == 0) printf("%s n=%.1fMiB both=%d written=%d median %.1f us min %.1f  (%.2f GB/s a core)\n", mode, n / 1048576.0, both, written,
                       t[reps / 2] / 1e3, t[0] / 1e3, n / (t[reps / 2] / 1e9) / 1e9);
    if (!r) waitpid(child, 0, 0);
    return 0;
}
