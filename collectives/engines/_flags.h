/* A window's flags as the C parts of the window plans use them (_small_c.c, _reads_c.c):
   every rank's flag area of u64 words, one per 64-byte line, written only by its owner
   (engines/direct.py, transports/shm_window.py); waits that spin, then yield, then give up
   (the Python plan finishes with its sleeping waits); posts that ring the peers' doorbells. */

#ifndef COLLECTIVES_FLAGS_H
#define COLLECTIVES_FLAGS_H

#include <sched.h>
#include <stdint.h>

#include "_waits.h"

#define FLAG_WORDS 8 /* u64 words per flag (64-byte lines) */

typedef struct {
    int ranks, me;          /* the window's ranks, and my index among them */
    int cpu_slot;           /* the flag where each rank says which CPU it last posted from (-1: none) */
    int bells;
    long long moves;        /* how often this rank moved off a peer's CPU (separate()) */
    int64_t spin_ns, yield_ns;
    uint64_t **flags;       /* [ranks]: each rank's flag area */
    uint32_t **doorbell;    /* [bells] */
    uint32_t **sleeping;    /* [bells] */
} FlagSet;

static inline uint64_t load_flag(const FlagSet *w, int rank, int slot) {
    return __atomic_load_n(w->flags[rank] + (size_t)slot * FLAG_WORDS, __ATOMIC_ACQUIRE);
}

static inline int current_cpu(void) {
#ifdef __linux__
    return sched_getcpu();
#else
    return -1;
#endif
}

/* Two ranks that the scheduler put on one CPU, with other CPUs idle, spin against each other:
   the waiter holds the CPU its peer needs. It happens after a futex wake-up, which places the
   woken rank beside its waker, and then lasts (a call took 48 us instead of 1.6, at 2 ranks on
   2 cores). So where ranks do not outnumber CPUs, before spinning on a peer that last posted
   from this CPU, the higher rank of the two moves itself to a CPU that no rank of the window
   posted from (and is in its affinity mask): it narrows its mask to that CPU, which migrates
   it at once, then restores the mask. */
static inline void separate(FlagSet *w, int rank) {
#ifndef __linux__
    (void)w, (void)rank; /* no per-thread CPU masks to move with */
#else
    if (w->me < rank) return;
    int here = sched_getcpu();
    if (here < 0 || load_flag(w, rank, w->cpu_slot) != (uint64_t)here + 1) return;
    cpu_set_t allowed, free_cpus, one;
    if (sched_getaffinity(0, sizeof allowed, &allowed) != 0) return;
    free_cpus = allowed;
    CPU_CLR(here, &free_cpus);
    for (int q = 0; q < w->ranks; q++) {
        uint64_t cpu = load_flag(w, q, w->cpu_slot);
        if (q != w->me && cpu > 0 && cpu <= CPU_SETSIZE) CPU_CLR((int)(cpu - 1), &free_cpus);
    }
    for (int cpu = 0; cpu < CPU_SETSIZE; cpu++) {
        if (!CPU_ISSET(cpu, &free_cpus)) continue;
        CPU_ZERO(&one);
        CPU_SET(cpu, &one);
        if (sched_setaffinity(0, sizeof one, &one) == 0) {
            sched_setaffinity(0, sizeof allowed, &allowed);
            w->moves++;
            __atomic_store_n(w->flags[w->me] + (size_t)w->cpu_slot * FLAG_WORDS, (uint64_t)cpu + 1, __ATOMIC_RELAXED);
        }
        return;
    }
#endif
}

/* Wait until rank's flag ``slot`` reaches ``value``: spin, then yield; 0 if it did not. */
static inline int reach(FlagSet *w, int rank, int slot, uint64_t value) {
    if (load_flag(w, rank, slot) >= value) return 1;
    if (w->spin_ns > 0 && w->cpu_slot >= 0) separate(w, rank);
    int64_t start = now_ns(), spin_until = start + w->spin_ns, yield_until = spin_until + w->yield_ns;
    for (unsigned i = 1;; i++) {
        if (load_flag(w, rank, slot) >= value) return 1;
        if ((i & 63) == 0) {
            int64_t t = now_ns();
            if (t >= yield_until) return 0;
            if (t >= spin_until) sched_yield();
        } else {
            cpu_relax();
        }
    }
}

static inline void set_word(FlagSet *w, int slot, uint64_t value) {
    __atomic_store_n(w->flags[w->me] + (size_t)slot * FLAG_WORDS, value, __ATOMIC_RELAXED);
}

/* Set my flag ``slot`` to ``value`` (after every store before it) and ring the peers' doorbells. */
static inline void post(FlagSet *w, int slot, uint64_t value) {
    if (w->cpu_slot >= 0) set_word(w, w->cpu_slot, (uint64_t)(current_cpu() + 1));
    __atomic_store_n(w->flags[w->me] + (size_t)slot * FLAG_WORDS, value, __ATOMIC_RELEASE);
    for (int i = 0; i < w->bells; i++) ring_doorbell(w->doorbell[i], w->sleeping[i]);
}

#endif
