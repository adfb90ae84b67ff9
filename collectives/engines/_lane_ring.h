/* A lane of the express lane (_express_c.c, which includes this): my ring in the peer's inbox and
   the peer's ring in mine (transports/shm.py), whole frames written into one and taken out of the
   other, and the CPU each writer last wrote from. Frames are the transports' (transports/base.py:
   a 16-byte header ``tag u64 | nbytes u32 | flags u32``, then the payload). A writer that finds
   the ring empty may restart at the next lap's start (claim(); the reader follows: settle()),
   as transports/shm_ring.py describes. */

#ifndef COLLECTIVES_LANE_RING_H
#define COLLECTIVES_LANE_RING_H

#include <Python.h>
#include <stdint.h>
#include <string.h>

#include "_waits.h"

#define HEADER_BYTES 16
#define FLAG_END 1u
#define LANE_WORDS 15
#define LANE_WORDS_HALF 19 /* ... and the in-place swap's words (_half_swap.h) */
#define RING_RESUME 12      /* the resume word's bytes after the tail (transports/shm_ring.py, _RING_RESUME) */
#define RESTART_BYTES (512u << 10) /* how far into a lap the tail must be for a restart (shm_ring.py, RESTART_BYTES) */


typedef struct {
    uint64_t *out_tail, *out_head; /* my ring in the peer's inbox */
    uint32_t *out_want, *out_cpu;  /* (out_cpu: the CPU I last wrote from + 1) */
    uint32_t *out_resume, *in_resume; /* the lap where each ring's writer last restarted (claim()) */
    char *out_data;
    uint64_t *in_tail, *in_head;   /* the peer's ring in my inbox */
    uint32_t *in_want, *in_cpu;    /* (in_cpu: the CPU the peer last wrote from + 1) */
    char *in_data;
    uint64_t capacity;
    uint32_t *bell, *sleeping, *peer_closed, *my_closed;
    uint64_t *my_slot, *peer_slot, *deal; /* the in-place swap's (_half_swap.h); NULL: none */
    int low;                       /* whether I am the lower rank of the two */
    unsigned asks;                 /* calls the halves handed to the engine to learn single copy */
    uint64_t in_place_n, in_place_tag; /* the size and tag of the peer's last call through the ring in place
                                      (its slot said so, _half_swap.h: mark_in_place()); 0: none */
    PyObject *channel;             /* the ShmChannel; NULL where the peer is not over shm */
} Lane;

static void ring_bell(const Lane *lane) { ring_doorbell(lane->bell, lane->sleeping); }

/* Say which CPU I write from (before the tail that publishes the bytes), for apart(). */
static void note_cpu(Lane *lane) {
    uint32_t cpu = (uint32_t)(current_cpu() + 1);
    if (__atomic_load_n(lane->out_cpu, __ATOMIC_RELAXED) != cpu) __atomic_store_n(lane->out_cpu, cpu, __ATOMIC_RELAXED);
}

/* Whether the peer of ``from`` last wrote from the CPU I run on (where ranks spin: they do not
   outnumber CPUs). Two ranks that the scheduler keeps on one CPU (it does where a third task
   busies the other) spin against each other, each holding the CPU the other needs to write:
   swaps then took several times as long for whole runs. Moving the higher rank to the
   other CPU, as the window's flag waits do (_flags.h, separate()), put it beside the third task
   there, and calls took milliseconds (docs/performance.md, "Nineteenth round, point to point").
   So the swap's wait beside its peer yields from the start, for as long as it would have spun.
   (The ring's wait does not: its ranks spin long enough that the scheduler keeps them apart,
   and yielding from the start there cost hypercube_perf's 256 KiB exchange under load.) */
static int beside(Lane *from) {
    int here = current_cpu();
    return here >= 0 && __atomic_load_n(from->in_cpu, __ATOMIC_RELAXED) == (uint32_t)here + 1;
}

/* ``n`` bytes between ``buf`` and the ring ``data`` of ``cap`` bytes at position ``at``,
   wrapping at its end. */
static void ring_write(char *data, uint64_t cap, uint64_t at, const char *buf, uint64_t n) {
    uint64_t pos = at % cap, first = n < cap - pos ? n : cap - pos;
    memcpy(data + pos, buf, first);
    if (first < n) memcpy(data, buf + first, n - first);
}

static void ring_read(const char *data, uint64_t cap, uint64_t at, char *buf, uint64_t n) {
    uint64_t pos = at % cap, first = n < cap - pos ? n : cap - pos;
    memcpy(buf, data + pos, first);
    if (first < n) memcpy(buf + first, data, n - first);
}

/* Where my next ``frame`` bytes go in my ring, and the room from there (into ``room``): at the
   tail; or, where the reader has taken everything, the tail is at least RESTART_BYTES into its
   lap and the frame fits before it, at the next lap's start (a restart, skipping the rest of the
   lap), so that a stream of messages keeps to the ring's first RESTART_BYTES (and a frame)
   instead of passing over all of it, whose lines go cold in a pause: a timed loop's first pass
   over a 4 MiB ring was 64 slow calls of 64 KiB. Not at every frame: lines the reader's copy has
   just read are slower to write again than lines it read some 512 KiB ago (64 KiB calls ~12 µs
   against ~8; docs/performance.md, "Thirty-ninth round"). A restart stores the new lap in the
   resume word, which the tail's release store publishes with the frame; the caller publishes the
   tail from the position returned. */
static uint64_t claim(Lane *lane, uint64_t frame, uint64_t *room) {
    uint64_t cap = lane->capacity, tail = __atomic_load_n(lane->out_tail, __ATOMIC_RELAXED);
    uint64_t head = __atomic_load_n(lane->out_head, __ATOMIC_ACQUIRE), at = tail % cap;
    if (tail == head && at >= RESTART_BYTES && frame <= at) {
        tail += cap - at;
        __atomic_store_n(lane->out_resume, (uint32_t)(tail / cap), __ATOMIC_RELAXED);
        *room = at;
        return tail;
    }
    *room = cap - (tail - head);
    return tail;
}

/* My in-ring's head, past the rest of a lap that its writer's restart skipped (then published at
   once, freeing that room), and the bytes to read from there (into ``have``). Only the writer's
   restart at this very head leaves the resume word at the next lap: the writer restarts where the
   ring is empty, so at my head, and moves the tail past it; the resume word of an earlier restart
   names a lap I have reached (unless 2**32 laps passed without a restart). */
static uint64_t settle(Lane *lane, uint64_t *have) {
    uint64_t cap = lane->capacity, head = __atomic_load_n(lane->in_head, __ATOMIC_RELAXED);
    uint64_t tail = __atomic_load_n(lane->in_tail, __ATOMIC_ACQUIRE), at = head % cap;
    if (tail != head && at && __atomic_load_n(lane->in_resume, __ATOMIC_RELAXED) == (uint32_t)(head / cap + 1)) {
        head += cap - at;
        __atomic_store_n(lane->in_head, head, __ATOMIC_RELEASE);
        if (__atomic_load_n(lane->in_want, __ATOMIC_SEQ_CST)) ring_bell(lane); /* the writer waits for room */
    }
    *have = tail - head;
    return head;
}

/* Write one whole frame if the ring has room for it: 1 written, 0 not. */
static int write_frame(Lane *lane, uint64_t tag, const char *buf, uint64_t n) {
    if (__atomic_load_n(lane->peer_closed, __ATOMIC_ACQUIRE) || __atomic_load_n(lane->my_closed, __ATOMIC_ACQUIRE))
        return 0;
    uint64_t cap = lane->capacity, frame = HEADER_BYTES + n, room;
    uint64_t tail = claim(lane, frame, &room);
    if (frame > room) return 0;
    unsigned char header[HEADER_BYTES];
    uint32_t nbytes = (uint32_t)n, flags = FLAG_END;
    memcpy(header, &tag, 8); /* little-endian, as struct "<QII" (x86-64, aarch64) */
    memcpy(header + 8, &nbytes, 4);
    memcpy(header + 12, &flags, 4);
    ring_write(lane->out_data, cap, tail, (const char *)header, HEADER_BYTES);
    if (n) ring_write(lane->out_data, cap, tail + HEADER_BYTES, buf, n);
    note_cpu(lane);
    __atomic_store_n(lane->out_tail, tail + frame, __ATOMIC_RELEASE);
    if (frame == room) __atomic_store_n(lane->out_want, 1, __ATOMIC_RELAXED); /* as _write_some: tell me of room */
    else if (__atomic_load_n(lane->out_want, __ATOMIC_RELAXED)) __atomic_store_n(lane->out_want, 0, __ATOMIC_RELAXED);
    ring_bell(lane);
    return 1;
}

enum { NOT_YET, TAKEN, NOT_OURS };

/* Look at the ring once: take the next frame into ``buf`` if it is whole and is ``tag``'s,
   of ``n`` bytes, the message's last (``headless``: its header was read already, and only the
   payload is next). */
static int take_frame(Lane *lane, uint64_t tag, char *buf, uint64_t n, int headless) {
    uint64_t cap = lane->capacity, have, head = settle(lane, &have);
    uint64_t skip = headless ? 0 : HEADER_BYTES;
    if (!headless) {
        if (have < HEADER_BYTES) return NOT_YET;
        unsigned char header[HEADER_BYTES];
        ring_read(lane->in_data, cap, head, (char *)header, HEADER_BYTES);
        uint64_t got_tag;
        uint32_t nbytes, flags;
        memcpy(&got_tag, header, 8);
        memcpy(&nbytes, header + 8, 4);
        memcpy(&flags, header + 12, 4);
        if (got_tag != tag || nbytes != n || flags != FLAG_END) return NOT_OURS;  /* a whole plain frame only */
    }
    if (have < skip + n) return NOT_YET;
    if (n) ring_read(lane->in_data, cap, head + skip, buf, n);
    __atomic_store_n(lane->in_head, head + skip + n, __ATOMIC_RELEASE);
    if (__atomic_load_n(lane->in_want, __ATOMIC_SEQ_CST)) ring_bell(lane); /* the writer waits for room */
    return TAKEN;
}

/* The lane's words (``ShmChannel.lane``: addresses in this process and the capacity; then,
   where there are 19, the in-place swap's slots, deal and whether I am the lower rank) into
   ``lane``, which keeps ``channel``. 0, or -1 with an error set. */
static int set_lane(Lane *lane, PyObject *channel, PyObject *words) {
    Py_ssize_t count = PyTuple_Check(words) ? PyTuple_GET_SIZE(words) : 0;
    if (count != LANE_WORDS && count != LANE_WORDS_HALF) {
        PyErr_SetString(PyExc_ValueError, "a lane is a tuple of 15 or 19 ints (ShmChannel.lane)");
        return -1;
    }
    uint64_t w[LANE_WORDS_HALF] = {0};
    for (Py_ssize_t i = 0; i < count; i++) {
        w[i] = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(words, i));
        if (PyErr_Occurred()) return -1;
    }
    lane->out_tail = (uint64_t *)(uintptr_t)w[0];
    lane->out_want = (uint32_t *)(uintptr_t)w[1];
    lane->out_head = (uint64_t *)(uintptr_t)w[2];
    lane->out_cpu = (uint32_t *)(uintptr_t)w[3];
    lane->out_data = (char *)(uintptr_t)w[4];
    lane->in_tail = (uint64_t *)(uintptr_t)w[5];
    lane->in_want = (uint32_t *)(uintptr_t)w[6];
    lane->in_head = (uint64_t *)(uintptr_t)w[7];
    lane->in_cpu = (uint32_t *)(uintptr_t)w[8];
    lane->in_data = (char *)(uintptr_t)w[9];
    lane->capacity = w[10];
    lane->bell = (uint32_t *)(uintptr_t)w[11];
    lane->sleeping = (uint32_t *)(uintptr_t)w[12];
    lane->peer_closed = (uint32_t *)(uintptr_t)w[13];
    lane->my_closed = (uint32_t *)(uintptr_t)w[14];
    lane->out_resume = (uint32_t *)((char *)lane->out_tail + RING_RESUME);
    lane->in_resume = (uint32_t *)((char *)lane->in_tail + RING_RESUME);
    lane->my_slot = (uint64_t *)(uintptr_t)w[15];
    lane->peer_slot = (uint64_t *)(uintptr_t)w[16];
    lane->deal = (uint64_t *)(uintptr_t)w[17];
    lane->low = w[18] != 0;
    if (lane->my_slot == NULL || lane->peer_slot == NULL) lane->deal = NULL;
    if (lane->capacity == 0) {
        PyErr_SetString(PyExc_ValueError, "a lane's ring has no capacity");
        return -1;
    }
    Py_INCREF(channel);
    lane->channel = channel;
    return 0;
}

#endif
