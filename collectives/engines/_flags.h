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
    long long moves;        /* how often this rank moved itself to another CPU (separate(), balance()) */
    int every_poll;         /* reach() yields at every poll (a plan's choice: ranks outnumber CPUs, its size) */
    long long crowded_waits; /* reach() waits that yielded at every poll */
    int64_t spin_ns, yield_ns;
    int64_t balanced_at;    /* when balance() last looked at where the ranks run (0: never) */
    uint64_t **flags;       /* [ranks]: each rank's flag area */
    uint32_t **doorbell;    /* [bells] */
    uint32_t **sleeping;    /* [bells] */
} FlagSet;

static inline uint64_t load_flag(const FlagSet *w, int rank, int slot) {
    return __atomic_load_n(w->flags[rank] + (size_t)slot * FLAG_WORDS, __ATOMIC_ACQUIRE);
}

#ifdef __linux__
/* Move this thread to ``cpu`` at once (its mask narrowed to it, which migrates it), then give
   it back its mask ``allowed``, and record the CPU in its flag area. */
static inline void move_to(FlagSet *w, int cpu, const cpu_set_t *allowed) {
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(cpu, &one);
    if (sched_setaffinity(0, sizeof one, &one) != 0) return;
    sched_setaffinity(0, sizeof *allowed, allowed);
    w->moves++;
    __atomic_store_n(w->flags[w->me] + (size_t)w->cpu_slot * FLAG_WORDS, (uint64_t)cpu + 1, __ATOMIC_RELAXED);
}
#endif

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
    cpu_set_t allowed, free_cpus;
    if (sched_getaffinity(0, sizeof allowed, &allowed) != 0) return;
    free_cpus = allowed;
    CPU_CLR(here, &free_cpus);
    for (int q = 0; q < w->ranks; q++) {
        uint64_t cpu = load_flag(w, q, w->cpu_slot);
        if (q != w->me && cpu > 0 && cpu <= CPU_SETSIZE) CPU_CLR((int)(cpu - 1), &free_cpus);
    }
    for (int cpu = 0; cpu < CPU_SETSIZE; cpu++) {
        if (!CPU_ISSET(cpu, &free_cpus)) continue;
        move_to(w, cpu, &allowed);
        return;
    }
#endif
}

/* Where ranks outnumber CPUs the scheduler can leave more of a window's ranks on one CPU than
   their share (3 and 1 of 4 ranks on 2 CPUs) and keep them there, since ranks that yield while
   they wait look busy to its balancer; then every call waits for the crowded CPU's turns. The
   CPU a rank of ``ranks`` (each rank's last posted CPU + 1 in ``posted``, 0: none) should move
   to, or -1 where it stays: only the highest of the ranks that last posted from ``here``, where
   they are more than ceil(ranks / CPUs allowed) and an allowed CPU has fewer than that, to the
   allowed CPU with the fewest (the lowest of equals). */
#ifdef __linux__
static inline int crowded_move(int ranks, int me, const uint64_t *posted, int here, const cpu_set_t *allowed) {
    int cpus = CPU_COUNT(allowed), crowd = 0;
    if (cpus <= 1 || here < 0 || !CPU_ISSET(here, allowed)) return -1;
    for (int q = 0; q < ranks; q++) {
        if (q != me && posted[q] != (uint64_t)here + 1) continue;
        if (q > me) return -1; /* a higher rank here moves, not this one */
        crowd++;
    }
    int share = (ranks + cpus - 1) / cpus, best = -1, fewest = share;
    if (crowd <= share) return -1;
    for (int cpu = 0, seen = 0; cpu < CPU_SETSIZE && seen < cpus; cpu++) {
        if (!CPU_ISSET(cpu, allowed)) continue;
        seen++;
        if (cpu == here) continue;
        int n = 0;
        for (int q = 0; q < ranks; q++)
            if (q != me && posted[q] == (uint64_t)cpu + 1) n++;
        if (n < fewest) fewest = n, best = cpu;
    }
    return best;
}
#endif

#define BALANCE_NS 1000000 /* a rank looks (and moves itself) at most once a millisecond (balance()) */
#define BALANCE_MAX_RANKS 64

/* Before a yielding wait (ranks outnumber CPUs): move this rank as ``crowded_move`` says, the
   way separate() moves. */
static inline void balance(FlagSet *w) {
#ifdef __linux__
    if (w->ranks > BALANCE_MAX_RANKS) return;
    int here = sched_getcpu();
    if (here < 0) return;
    uint64_t posted[BALANCE_MAX_RANKS];
    int crowd = 0;
    for (int q = 0; q < w->ranks; q++) {
        posted[q] = q == w->me ? (uint64_t)here + 1 : load_flag(w, q, w->cpu_slot);
        crowd += posted[q] == (uint64_t)here + 1;
    }
    if (crowd < 2) return; /* alone here: nothing to decide */
    int64_t t = now_ns();
    if (w->balanced_at != 0 && t - w->balanced_at < BALANCE_NS) return;
    w->balanced_at = t; /* (the mask is read at most once per BALANCE_NS, moving or not) */
    cpu_set_t allowed;
    if (sched_getaffinity(0, sizeof allowed, &allowed) != 0) return;
    int cpu = crowded_move(w->ranks, w->me, posted, here, &allowed);
    if (cpu >= 0) move_to(w, cpu, &allowed);
#else
    (void)w;
#endif
}

/* Wait until rank's flag ``slot`` reaches ``value``: spin, then yield; 0 if it did not. Where
   the plan set ``every_poll`` (ranks outnumber CPUs, a small call: _small_c.c) every poll
   yields, as the lane's waits do (_swap.h); otherwise a yield every 64th poll. */
static inline int reach(FlagSet *w, int rank, int slot, uint64_t value) {
    if (load_flag(w, rank, slot) >= value) return 1;
    if (w->spin_ns > 0 && w->cpu_slot >= 0) separate(w, rank);
    else if (w->yield_ns > 0 && w->cpu_slot >= 0) balance(w);
    int64_t start = now_ns(), spin_until = start + w->spin_ns, yield_until = spin_until + w->yield_ns;
    int yielding = w->every_poll;
    if (yielding) w->crowded_waits++;
    for (unsigned i = 1;; i++) {
        if (load_flag(w, rank, slot) >= value) return 1;
        if ((i & 63) == 0 || yielding) {
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
