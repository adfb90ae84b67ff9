/* The single-copy swap of the express lane's sendrecv (_express_c.c, which includes this after
   its Lane and Express types, its ring helpers and its interned names): each side's RTS out,
   the peer's message read straight out of the peer's memory (_cma.h), TAKEN back. */

#ifndef COLLECTIVES_SWAP_H
#define COLLECTIVES_SWAP_H

#include <sched.h>
#include <stdint.h>

#include "_cma.h"
#include "_waits.h"

/* A message of at least ``single_bytes`` goes by single copy (transports/single_copy.py): my
   RTS frame (flags RTS, payload ``address u64 | size u64 | id u64``) says where my bytes lie;
   the peer's RTS says where its bytes lie, which I copy straight into my receive buffer
   (process_vm_readv) and answer with TAKEN (a header only: tag = the id, flags TAKEN); my send
   is done at the peer's TAKEN. Here only where the channel has learnt that both work (the
   engine's first RTS on it asks), so no RTS here ever stalls its stream. */

#define FLAG_RTS 2u
#define FLAG_TAKEN 4u
#define RTS_BYTES 24

static PyObject *s_single_copy, *s_offers, *s_reads, *s_pid, *s_next_id, *s_awaiting, *s_held_rts, *s_drop_held_rts,
    *s_address, *s_nbytes, *s_id;

enum { NEVER, UNKNOWN, WORKS };

/* What ``channel``'s engine has learnt of single copy (``offers`` for my sends, ``reads`` for
   my receives): WORKS, NEVER (none on this channel, or refused), UNKNOWN (not yet tried: the
   engine's first RTS asks), or -1 with an error set. A send also finds it UNKNOWN while an RTS
   of the engine's awaits its answer. */
static int single_copy_state(PyObject *channel, PyObject *which) {
    PyObject *sc = PyObject_GetAttr(channel, s_single_copy);
    if (sc == NULL) return -1;
    int state = NEVER;
    if (sc != Py_None) {
        PyObject *v = PyObject_GetAttr(sc, which);
        state = v == NULL ? -1 : v == Py_True ? WORKS : v == Py_None ? UNKNOWN : NEVER;
        Py_XDECREF(v);
    }
    Py_DECREF(sc);
    if (state == WORKS && which == s_offers) {
        int r = filled(channel, s_awaiting);
        state = r < 0 ? -1 : r ? UNKNOWN : WORKS;
    }
    return state;
}

/* An int attribute of the channel's SingleCopy (``pid``, ``_next_id``): 0 with it set, -1 with
   an error set. With ``bump``, the attribute is advanced by one (the id of a new RTS). */
static int single_copy_int(PyObject *channel, PyObject *name, long long *value, int bump) {
    PyObject *sc = PyObject_GetAttr(channel, s_single_copy);
    if (sc == NULL) return -1;
    PyObject *v = PyObject_GetAttr(sc, name);
    int r = -1;
    if (v != NULL) {
        *value = PyLong_AsLongLong(v);
        r = *value == -1 && PyErr_Occurred() ? -1 : 0;
        if (r == 0 && bump) {
            PyObject *next = PyLong_FromLongLong(*value + 1);
            r = next == NULL ? -1 : PyObject_SetAttr(sc, name, next);
            Py_XDECREF(next);
        }
        Py_DECREF(v);
    }
    Py_DECREF(sc);
    return r;
}

/* Write a header-only or RTS frame of the protocol if the ring has room: 1 written, 0 not. */
static int write_control(Lane *lane, uint64_t tag, uint32_t flags, const uint64_t *payload, uint32_t n) {
    uint64_t cap = lane->capacity, room, tail = claim(lane, HEADER_BYTES + n, &room);
    if (HEADER_BYTES + n > room) return 0;
    unsigned char frame[HEADER_BYTES + RTS_BYTES];
    memcpy(frame, &tag, 8);
    memcpy(frame + 8, &n, 4);
    memcpy(frame + 12, &flags, 4);
    if (n) memcpy(frame + HEADER_BYTES, payload, n);
    ring_write(lane->out_data, cap, tail, (const char *)frame, HEADER_BYTES + n);
    note_cpu(lane);
    __atomic_store_n(lane->out_tail, tail + HEADER_BYTES + n, __ATOMIC_RELEASE);
    ring_bell(lane);
    return 1;
}

/* The header of the next frame in ``lane``'s in-ring, and the bytes there: 0 where no whole
   header is there yet. */
static int peek(Lane *lane, uint64_t *tag, uint32_t *nbytes, uint32_t *flags, uint64_t *have) {
    uint64_t head = settle(lane, have);
    if (*have < HEADER_BYTES) return 0;
    unsigned char header[HEADER_BYTES];
    ring_read(lane->in_data, lane->capacity, head, (char *)header, HEADER_BYTES);
    memcpy(tag, header, 8);
    memcpy(nbytes, header + 8, 4);
    memcpy(flags, header + 12, 4);
    return 1;
}

static void consume(Lane *lane, uint64_t n) {
    uint64_t head = __atomic_load_n(lane->in_head, __ATOMIC_RELAXED);
    __atomic_store_n(lane->in_head, head + n, __ATOMIC_RELEASE);
    if (__atomic_load_n(lane->in_want, __ATOMIC_SEQ_CST)) ring_bell(lane);
}

typedef struct {
    Lane *to, *from;
    uint64_t tag, id;          /* the wire tag of both messages; my RTS's id */
    char *into;                /* my receive buffer, of n bytes */
    uint64_t n;
    pid_t pid;                 /* the process of ``from`` */
    int sent, received;        /* the peer's TAKEN came; I copied the peer's message */
} Swap;

enum { IDLE, MOVED, OTHER, STOP };

/* Copy ``size`` bytes at ``address`` in process ``pid`` into ``into``, the GIL released: 0,
   or -1 where the kernel refused or the process is gone (the engine, reading again, says why). */
static int read_peer(pid_t pid, uint64_t address, char *into, uint64_t size) {
    int ok;
    Py_BEGIN_ALLOW_THREADS
    ok = cma_copy(pid, 0, into, address, (size_t)size);
    Py_END_ALLOW_THREADS
    return ok ? 0 : -1;
}

/* The peer's RTS at the head of ``from``: copy its message and answer TAKEN. */
static int take_rts(Swap *s) {
    Lane *lane = s->from;
    uint64_t tag, have, rts[3];
    uint32_t nbytes, flags;
    if (!peek(lane, &tag, &nbytes, &flags, &have)) return IDLE;
    if (tag != s->tag || flags != FLAG_RTS || nbytes != RTS_BYTES) return OTHER;
    if (have < HEADER_BYTES + RTS_BYTES) return IDLE;
    ring_read(lane->in_data, lane->capacity, __atomic_load_n(lane->in_head, __ATOMIC_RELAXED) + HEADER_BYTES,
              (char *)rts, RTS_BYTES);
    if (rts[1] != s->n) return STOP; /* the sizes differ: the engine says so */
    uint64_t room = lane->capacity - (__atomic_load_n(lane->out_tail, __ATOMIC_RELAXED) -
                                      __atomic_load_n(lane->out_head, __ATOMIC_ACQUIRE));
    if (room < HEADER_BYTES) return IDLE; /* my answer must fit once I have read */
    if (read_peer(s->pid, rts[0], s->into, s->n) < 0) return STOP;
    if (__atomic_load_n(lane->peer_closed, __ATOMIC_ACQUIRE)) return STOP; /* its memory may not be the message */
    consume(lane, HEADER_BYTES + RTS_BYTES);
    write_control(lane, rts[2], FLAG_TAKEN, NULL, 0);
    s->received = 1;
    return MOVED;
}

/* The peer's TAKEN of my RTS at the head of ``to``. */
static int take_taken(Swap *s) {
    uint64_t tag, have;
    uint32_t nbytes, flags;
    if (!peek(s->to, &tag, &nbytes, &flags, &have)) return IDLE;
    if (tag != s->id || flags != FLAG_TAKEN || nbytes != 0) return OTHER;
    consume(s->to, HEADER_BYTES);
    s->sent = 1;
    return MOVED;
}

enum { NONE_HELD = 1, HELD };

/* The RTS the engine of ``channel`` holds first among its messages of ``key`` (its receive
   was not posted when the RTS came: transports/single_copy.py, Remote), into ``rts``: HELD
   where there is one, of ``n`` bytes; NONE_HELD where it holds nothing of the tag; 0 where it
   holds something else (the engine's to take); -1 with an error set. */
static int held_rts(PyObject *channel, PyObject *key, uint64_t n, uint64_t *rts) {
    int r = has_entry(channel, s_unexpected, key);
    if (r <= 0) return r < 0 ? -1 : NONE_HELD;
    PyObject *remote = PyObject_CallMethodOneArg(channel, s_held_rts, key);
    if (remote == NULL) return -1;
    if (remote == Py_None) {
        Py_DECREF(remote);
        return 0;
    }
    PyObject *names[3] = {s_address, s_nbytes, s_id};
    for (int i = 0; i < 3 && r >= 0; i++) {
        PyObject *v = PyObject_GetAttr(remote, names[i]);
        rts[i] = v == NULL ? 0 : PyLong_AsUnsignedLongLong(v);
        r = v == NULL || PyErr_Occurred() ? -1 : 0;
        Py_XDECREF(v);
    }
    Py_DECREF(remote);
    return r < 0 ? -1 : rts[1] == n ? HELD : 0;
}

/* Copy the peer's message whose RTS the engine holds (``rts``) and answer TAKEN, taking it off
   the engine's held messages: 0 (the receive then done, or left to the engine where the read
   failed or my answer finds no room), -1 with an error set. */
static int take_held(Swap *s, const uint64_t *rts, PyObject *key) {
    Lane *lane = s->from;
    uint64_t room = lane->capacity - (__atomic_load_n(lane->out_tail, __ATOMIC_RELAXED) -
                                      __atomic_load_n(lane->out_head, __ATOMIC_ACQUIRE));
    if (room < HEADER_BYTES || read_peer(s->pid, rts[0], s->into, s->n) < 0 ||
        __atomic_load_n(lane->peer_closed, __ATOMIC_ACQUIRE))
        return 0;
    PyObject *dropped = PyObject_CallMethodOneArg(lane->channel, s_drop_held_rts, key);
    if (dropped == NULL) return -1;
    Py_DECREF(dropped);
    write_control(lane, rts[2], FLAG_TAKEN, NULL, 0);
    s->received = 1;
    return 0;
}

/* Move both directions until done, a frame not theirs is next, or the wait is over: a spin of
   ``spin_ns``, then sched_yield until ``swap_yield_ns`` more have passed (``shift_yield_ns``
   where I send to one peer and receive from another: a shift, whose call handed back costs
   the engine's Python path and a doorbell sleep; docs/performance.md, "Thirty-third round,
   the 4-rank sendrecv's swap"), plus about the time the peer's copy of my message takes (at
   2 GB/s). It spins no longer than any other wait: where the peer shares my core, only a
   yield lets it copy. Where ranks outnumber cores (no spin) every poll yields: the 63 pause
   hints between two yields held the core a peer needed for its read or its answer
   (docs/performance.md, "Twenty-sixth round, the 4-rank sendrecv"). */
static void swap_wait(Express *e, Swap *s) {
    int64_t spin = e->spin_ns, wait = s->to != s->from ? e->shift_yield_ns : e->swap_yield_ns;
    int64_t yield = wait + (int64_t)(s->n / 2);
    int64_t start = 0, spin_until = 0, yield_until = 0;
    int yielding = 0;
    for (unsigned i = 1;; i++) {
        int r = s->received ? IDLE : take_rts(s), t = s->sent ? IDLE : take_taken(s);
        if (s->sent && s->received) return;
        if (r == STOP || t == STOP) return;
        if (r == MOVED || t == MOVED) continue;
        if (r == OTHER || t == OTHER) return;
        if (__atomic_load_n(s->from->peer_closed, __ATOMIC_ACQUIRE) || __atomic_load_n(s->to->peer_closed, __ATOMIC_ACQUIRE))
            return;
        if (start == 0) {
            start = now_ns(), spin_until = start + spin, yield_until = spin_until + yield;
            /* (beside(); for the lane's frame sizes: beyond, the spin is a sliver of the wait) */
            yielding = spin > 0 && s->n <= (uint64_t)e->max_bytes && beside(s->from);
            if (yielding) spin_until = start, e->besides++;
            if (spin <= 0) yielding = 1, e->crowded_waits++;
        } else if ((i & 63) == 0 || yielding) {
            int64_t now = now_ns();
            if (now >= yield_until) return;
            if (now >= spin_until) sched_yield();
        } else {
            cpu_relax();
        }
    }
}

/* Whether [a, a+n) and [b, b+m) share a byte. */
static int overlaps(const char *a, Py_ssize_t n, const char *b, Py_ssize_t m) {
    return n > 0 && m > 0 && a < b + m && b < a + n;
}

/* The single-copy swap, the lock held and both channels free: True where both are done; a
   tuple (send request or None, received) where the engine finishes the rest (my RTS then
   handed to ``to``'s channel, which awaits its answer); False where nothing moved. */
static PyObject *swap(Express *e, Lane *to, Lane *from, PyObject *x, const char *send, uint64_t n, Py_buffer *recv,
                      uint64_t tag, PyObject *key) {
    long long pid, id;
    uint64_t held[3]; /* the peer's RTS the engine holds for this tag: address, size, id */
    if (single_copy_int(from->channel, s_pid, &pid, 0) < 0) return NULL;
    if (__atomic_load_n(to->peer_closed, __ATOMIC_ACQUIRE) || __atomic_load_n(to->my_closed, __ATOMIC_ACQUIRE) ||
        __atomic_load_n(from->my_closed, __ATOMIC_ACQUIRE))
        Py_RETURN_FALSE;
    uint64_t room = to->capacity - (__atomic_load_n(to->out_tail, __ATOMIC_RELAXED) -
                                    __atomic_load_n(to->out_head, __ATOMIC_ACQUIRE));
    if (room < HEADER_BYTES + RTS_BYTES) Py_RETURN_FALSE;
    int holds = held_rts(from->channel, key, n, held);
    if (holds <= 0) {
        if (holds < 0) return NULL;
        Py_RETURN_FALSE;
    }
    if (single_copy_int(to->channel, s_next_id, &id, 1) < 0) return NULL;
    uint64_t rts[3] = {(uint64_t)(uintptr_t)send, n, (uint64_t)id};
    write_control(to, tag, FLAG_RTS, rts, RTS_BYTES);
    Swap s = {to, from, tag, (uint64_t)id, recv->buf, (uint64_t)recv->len, (pid_t)pid, 0, 0};
    if (holds == HELD && take_held(&s, held, key) < 0) return NULL; /* (my RTS first: the peer reads meanwhile) */
    swap_wait(e, &s);
    if (s.sent && s.received) Py_RETURN_TRUE;
    PyObject *request = Py_None;
    Py_INCREF(request);
    if (!s.sent) { /* the engine's from here: its channel awaits the answer */
        Py_DECREF(request);
        request = PyObject_CallMethod(to->channel, "_adopt_rts", "OKKK", x, (unsigned long long)n, (unsigned long long)tag,
                                      (unsigned long long)id);
        if (request == NULL) return NULL;
    }
    return Py_BuildValue("(NO)", request, s.received ? Py_True : Py_False);
}

#endif
