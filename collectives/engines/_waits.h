/* What the C parts of the engines (_small_c.c, _express_c.c) wait and wake with: the clock,
   the CPU's spin hint, and a peer's doorbell (transports/shm.py: a futex word the peer sleeps
   on, with a word saying whether it sleeps). */

#ifndef COLLECTIVES_WAITS_H
#define COLLECTIVES_WAITS_H

#include <sched.h>
#include <stdint.h>
#include <time.h>
#ifdef __linux__
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

/* The CPU this thread runs on, -1 where unknown. */
static inline int current_cpu(void) {
#ifdef __linux__
    return sched_getcpu();
#else
    return -1;
#endif
}

static inline int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* Ring a peer's doorbell: count the change, and wake the peer only if it sleeps. */
static inline void ring_doorbell(uint32_t *doorbell, const uint32_t *sleeping) {
    __atomic_fetch_add(doorbell, 1, __ATOMIC_SEQ_CST); /* a full fence before reading sleeping */
    if (__atomic_load_n(sleeping, __ATOMIC_SEQ_CST)) {
#ifdef __linux__
        syscall(SYS_futex, doorbell, FUTEX_WAKE, INT32_MAX, NULL, NULL, 0);
#endif
    }
}

#endif
