/* The swap by halves of the express lane's sendrecv (_express_c.c, which includes this after
   _swap.h): two ranks that send to and receive from each other, each in place (MPI's
   Sendrecv_replace) or out of place, each move half of the message both ways, with no copy
   aside and no frame on the rings, so that no engine ever sees it.

   The message's first half is the lower rank's, the rest the higher's. For each piece of its
   half, a rank reads the peer's message (process_vm_readv) into its receive buffer, or where
   it sends in place into a bounce buffer, then writes its own message into the peer's receive
   buffer (process_vm_writev), then copies the bounce into its buffer. The two halves are
   apart, so neither rank waits for the other between pieces: a rank overwrites only bytes that
   it has itself read, of its buffer or the peer's. Per rank that is half a read and half a
   write (and in place half a copy), where the single-copy swap was a whole read and in place
   a whole copy aside before it (docs/performance.md, "Twenty-second round, point to point").

   Both ranks must agree to it, and a rank whose peer is late must be able to withdraw (it then
   runs the call the old way): so the agreement is a word both compare-and-swap, the *deal*, in
   the lower rank's ring to the higher one (transports/shm.py): 0 free; OFFER_LOW or OFFER_HIGH
   (that rank's slot holds its buffers' addresses, the size and the wire tag); ACCEPTED (the peer saw the
   offer, its slot matching: both are bound). The offerer withdraws (OFFER back to 0) where no
   one accepts in time, or at once where the peer's frame comes into my ring meanwhile: the
   peer then runs this call through the ring, and would never take the offer; the
   compare-and-swap that wins decides. A peer in place below HALF_BYTES (which offers nothing)
   that finds an offer of an out-of-place rank (a push, or the halves) takes it whole instead,
   TAKEN_WHOLE (answer_offer()): it writes its message into the offerer's receive and then reads
   the offerer's message over its own, both copies its own, and the offerer only waits for its
   count. Once bound, each rank says it
   is done with its half by advancing the count in its slot, and returns once the peer's count
   has caught up: only then does its buffer hold the whole message. */

#ifndef COLLECTIVES_HALF_SWAP_H
#define COLLECTIVES_HALF_SWAP_H

#include <errno.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>

#include "_cma.h"
#include "_waits.h"

enum { DEAL_FREE = 0, OFFER_LOW = 1, OFFER_HIGH = 2, ACCEPTED = 3, TAKEN_WHOLE = 4 };
enum { SLOT_SEND, SLOT_RECV, SLOT_NBYTES, SLOT_TAG, SLOT_DONE };
enum { HALF_NOT_TAKEN, HALF_DONE, HALF_PEER_LOST, HALF_ASK, HALF_BY_ONE };
enum { BOUND_HALVES = 3 }; /* bind_half(): my push offer's taker came with the halves */

/* Calls of a lane that go to the engine while single copy is not yet known on its channel, so
   that the engine's RTS asks (what a run whose only large messages are the halves' would
   otherwise never do); past them, the call goes as before (the ring or the swap). */
#define HALF_ASKS 8

#define BOUNCE_BYTES ((uint64_t)256 << 10) /* a piece: read, written and copied while in my cache */

/* In a slot's size: the two ranks each write their whole message into the peer's receive
   (out of place only; push()), rather than each move half both ways. Both must say the same. */
#define PUSH_MODE ((uint64_t)1 << 62)

/* Whether the peer's process can no longer be read (gone, or a zombie): a byte of its buffer
   read to see. */
static int peer_lost(pid_t pid, uint64_t address) {
    char byte;
    struct iovec mine = {&byte, 1}, theirs = {(void *)(uintptr_t)address, 1};
    return process_vm_readv(pid, &mine, 1, &theirs, 1, 0) != 1 && errno == ESRCH;
}

/* The rings between us are empty both ways: nothing I sent before this call is still unread by
   the peer, nothing it sent is unread by me. So no message of this tag can come before the
   swap's (which goes on no ring), on either side. */
static int rings_empty(const Lane *lane) {
    return __atomic_load_n(lane->out_tail, __ATOMIC_ACQUIRE) == __atomic_load_n(lane->out_head, __ATOMIC_ACQUIRE) &&
           __atomic_load_n(lane->in_tail, __ATOMIC_ACQUIRE) == __atomic_load_n(lane->in_head, __ATOMIC_ACQUIRE);
}

/* Bind both ranks to the in-place swap, or not: 1 bound, 2 bound with the peer moving both
   messages (TAKEN_WHOLE), 3 bound to the halves where I said a push (BOUND_HALVES), 0 not (nothing
   of mine left on the deal). Accepts the peer's offer where its slot matches mine (or where mine
   says a push and the peer's the halves of the same call: a peer in place, which cannot push,
   from HALF_BYTES while out of place pushes up to HALF_BYTES_OUT_OF_PLACE; both then move
   halves), else offers and waits as the swap's wait does (a spin, then
   yields), and withdraws where no one accepts in time (``expired``) or as soon as a frame of the
   peer's is in my ring (``declined``, looked for at each look at the clock: the rings were empty
   when I offered, so the peer has begun a call of its own through the ring, and waiting out the
   offer would only hold up both). */
static int bind_half(Express *e, Lane *lane, uint64_t said, uint64_t n) {
    uint64_t *deal = lane->deal, *theirs = lane->peer_slot;
    uint64_t mine = lane->low ? OFFER_LOW : OFFER_HIGH, peer = lane->low ? OFFER_HIGH : OFFER_LOW;
    uint64_t expected = DEAL_FREE;
    if (!__atomic_compare_exchange_n(deal, &expected, mine, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
        uint64_t their_said = __atomic_load_n(&theirs[SLOT_NBYTES], __ATOMIC_ACQUIRE);
        int halves = their_said != said && their_said == (said & ~PUSH_MODE);
        if (expected != peer || (their_said != said && !halves) ||
            __atomic_load_n(&theirs[SLOT_TAG], __ATOMIC_ACQUIRE) != lane->my_slot[SLOT_TAG])
            return 0; /* another call's offer, or a stale deal: the peer withdraws it */
        if (!__atomic_compare_exchange_n(deal, &expected, ACCEPTED, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) return 0;
        return halves ? BOUND_HALVES : 1;
    }
    int64_t spin = e->spin_ns, yield = e->swap_yield_ns + (int64_t)(n / 2);
    int64_t start = now_ns(), spin_until = start + spin, until = spin_until + yield;
    /* The peer's ring was empty (rings_empty()) and its head is mine to move: a tail past it is a frame since. */
    uint64_t head = __atomic_load_n(lane->in_head, __ATOMIC_RELAXED);
    if (spin > 0 && beside(lane)) spin_until = start, e->besides++;
    int bound = 1;
    for (unsigned i = 1;; i++) {
        uint64_t now_deal = __atomic_load_n(deal, __ATOMIC_ACQUIRE);
        if (now_deal == ACCEPTED || now_deal == TAKEN_WHOLE) {
            bound += now_deal == TAKEN_WHOLE;
            break;
        }
        if ((i & 63) == 0 || spin_until == start) { /* (the spin's polls read the deal alone, as before) */
            int framed = __atomic_load_n(lane->in_tail, __ATOMIC_ACQUIRE) != head;
            int64_t now = framed ? 0 : now_ns();
            if (framed || now >= until || __atomic_load_n(lane->peer_closed, __ATOMIC_ACQUIRE)) {
                expected = mine;
                if (__atomic_compare_exchange_n(deal, &expected, DEAL_FREE, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
                    if (framed) e->declined++;
                    else e->expired++;
                    return 0;
                }
                bound += expected == TAKEN_WHOLE;
                break; /* accepted meanwhile */
            }
            if (now >= spin_until) sched_yield();
        } else {
            cpu_relax();
        }
    }
    __atomic_store_n(deal, DEAL_FREE, __ATOMIC_RELEASE); /* the peer's next offer may come */
    return bound;
}

/* My half [from, to), both ways, in pieces, the GIL released: the peer's message (at
   ``their_send``) into ``recv`` (through ``bounce`` where ``recv`` is ``send``), mine into its
   receive buffer (``their_recv``). In place a piece is the bounce's; out of place nothing is
   staged, so a piece is a cross-memory copy's whole (PIECE_BYTES): fewer system calls, each
   pinning more pages at once (docs/performance.md, "Twenty-ninth round, the cells short by a
   hair"). 1, or 0 where a copy failed (the peer gone: its memory is not the message's). */
static int move_half(pid_t pid, const char *send, char *recv, uint64_t their_send, uint64_t their_recv, uint64_t from,
                     uint64_t to, char *bounce) {
    int ok = 1, in_place = send == recv;
    uint64_t step = in_place ? BOUNCE_BYTES : (uint64_t)PIECE_BYTES;
    Py_BEGIN_ALLOW_THREADS
    for (uint64_t at = from; at < to && ok; at += step) {
        size_t piece = (size_t)(to - at < step ? to - at : step);
        ok = cma_copy(pid, 0, in_place ? bounce : recv + at, their_send + at, piece) &&
             cma_copy(pid, 1, (char *)send + at, their_recv + at, piece);
        if (ok && in_place) memcpy(recv + at, bounce, piece);
    }
    Py_END_ALLOW_THREADS
    return ok;
}

/* My whole message into the peer's receive buffer (at ``their_recv``), in pieces, the GIL
   released: out of place, the peer's message is not in it, and my message is read where it
   lies, in my cache where I have just written it (where a read of it from the peer's side
   takes my modified lines across: docs/performance.md, "Twenty-fourth round, point to point").
   1, or 0 where a copy failed. */
static int push(pid_t pid, const char *send, uint64_t their_recv, uint64_t n) {
    int ok = 1;
    Py_BEGIN_ALLOW_THREADS
    for (uint64_t at = 0; at < n && ok; at += BOUNCE_BYTES) {
        size_t piece = (size_t)(n - at < BOUNCE_BYTES ? n - at : BOUNCE_BYTES);
        ok = cma_copy(pid, 1, (char *)send + at, their_recv + at, piece);
    }
    Py_END_ALLOW_THREADS
    return ok;
}

/* Wait until the peer's count of halves done reaches ``count``: 1, or 0 where the peer is
   gone. The peer is bound and copying, so this wait has no deadline but its life: it spins
   (beside its peer it yields from the start, as the swap's wait), then yields, and looks at
   the peer's process every millisecond. */
static int await_peer_half(Express *e, Lane *lane, uint64_t count, pid_t pid, uint64_t theirs) {
    int64_t start = now_ns(), spin_until = start + e->spin_ns, look = start + 1000000;
    if (e->spin_ns > 0 && beside(lane)) spin_until = start, e->besides++;
    for (unsigned i = 1;; i++) {
        if (__atomic_load_n(&lane->peer_slot[SLOT_DONE], __ATOMIC_ACQUIRE) >= count) return 1;
        if ((i & 63) == 0 || spin_until == start) {
            int64_t now = now_ns();
            if (now >= look) {
                if (__atomic_load_n(lane->peer_closed, __ATOMIC_ACQUIRE) || peer_lost(pid, theirs)) return 0;
                look = now + 1000000;
            }
            if (now >= spin_until) sched_yield();
        } else {
            cpu_relax();
        }
    }
}

/* The swap by halves of ``send`` into the peer's receive buffer and of its message into
   ``recv`` (``send`` itself in place; ``n`` bytes each, ``tag`` on the wire) with the peer of
   ``lane`` (process ``pid``), the lock held and the channel free: HALF_DONE, HALF_NOT_TAKEN
   (nothing moved: the caller runs the call otherwise), HALF_PEER_LOST (bound, but the peer
   died before its half was done: the engine's receive says so), or -1 with an error set.
   ``*pushed`` (whether I offer a push) is cleared where the peer's halves bound us instead. */
static int half_swap(Express *e, Lane *lane, const char *send, char *recv, uint64_t n, uint64_t tag, pid_t pid,
                     int *pushed) {
    if (lane->deal == NULL || !rings_empty(lane)) return HALF_NOT_TAKEN;
    if (send == recv && e->bounce == NULL && (e->bounce = malloc(BOUNCE_BYTES)) == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    uint64_t *slot = lane->my_slot;
    note_cpu(lane); /* (for the peer's beside()) */
    __atomic_store_n(&slot[SLOT_SEND], (uint64_t)(uintptr_t)send, __ATOMIC_RELAXED);
    __atomic_store_n(&slot[SLOT_RECV], (uint64_t)(uintptr_t)recv, __ATOMIC_RELAXED);
    uint64_t said = *pushed ? n | PUSH_MODE : n;
    __atomic_store_n(&slot[SLOT_NBYTES], said, __ATOMIC_RELAXED);
    __atomic_store_n(&slot[SLOT_TAG], tag, __ATOMIC_RELAXED);
    int bound = bind_half(e, lane, said, n);
    if (!bound) return HALF_NOT_TAKEN;
    if (bound == BOUND_HALVES) *pushed = 0, bound = 1;
    uint64_t their_send = __atomic_load_n(&lane->peer_slot[SLOT_SEND], __ATOMIC_ACQUIRE);
    uint64_t their_recv = __atomic_load_n(&lane->peer_slot[SLOT_RECV], __ATOMIC_ACQUIRE);
    uint64_t split = n / 2 / 64 * 64, count = __atomic_load_n(&slot[SLOT_DONE], __ATOMIC_RELAXED) + 1;
    if (bound == 2) { /* the peer in place moves both messages (answer_offer()): mine is done at once */
        __atomic_store_n(&slot[SLOT_DONE], count, __ATOMIC_RELEASE);
        return await_peer_half(e, lane, count, pid, their_recv) ? HALF_BY_ONE : HALF_PEER_LOST;
    }
    if (*pushed ? !push(pid, send, their_recv, n)
               : !move_half(pid, send, recv, their_send, their_recv, lane->low ? 0 : split, lane->low ? split : n, e->bounce))
        return HALF_PEER_LOST;
    __atomic_store_n(&slot[SLOT_DONE], count, __ATOMIC_RELEASE);
    return await_peer_half(e, lane, count, pid, their_recv) ? HALF_DONE : HALF_PEER_LOST;
}

/* In a slot's size: the rank's call of this size and tag (the slot's tag) went through the ring
   in place, below HALF_BYTES, where an out-of-place peer offers (mark_in_place()). Never in an
   offer: the offerer writes its slot anew. */
#define IN_PLACE_MODE ((uint64_t)1 << 61)

/* Say in my slot that this call (``n`` bytes, ``tag``) goes through the ring in place: my frame's
   tail, published after, carries it to the peer, whose next out-of-place call of this size then
   goes the ring's way at once (seen_in_place()) instead of offering and waiting for my frame. */
static void mark_in_place(Lane *lane, uint64_t n, uint64_t tag) {
    __atomic_store_n(&lane->my_slot[SLOT_TAG], tag, __ATOMIC_RELAXED);
    __atomic_store_n(&lane->my_slot[SLOT_NBYTES], n | IN_PLACE_MODE, __ATOMIC_RELAXED);
}

/* After my out-of-place call took the peer's frame of ``n`` bytes and ``tag`` from the ring:
   remember whether the peer's call was in place (its slot, mark_in_place()), or forget it. */
static void seen_in_place(Lane *lane, uint64_t n, uint64_t tag) {
    int in_place = __atomic_load_n(&lane->peer_slot[SLOT_NBYTES], __ATOMIC_ACQUIRE) == (n | IN_PLACE_MODE) &&
                   __atomic_load_n(&lane->peer_slot[SLOT_TAG], __ATOMIC_ACQUIRE) == tag;
    lane->in_place_n = in_place ? n : 0;
    lane->in_place_tag = in_place ? tag : 0;
}

/* Whether the peer offers now (an out-of-place call's push or halves, bind_half()): a look at
   the deal alone, before the gates that a call takes the offer through. */
static int offered(const Lane *lane) {
    return lane->deal != NULL && __atomic_load_n(lane->deal, __ATOMIC_ACQUIRE) == (lane->low ? OFFER_HIGH : OFFER_LOW);
}

/* In place (``buf``, ``n`` bytes, ``tag`` on the wire), take the offer of the peer of ``lane``
   (process ``pid``) whole, where it is this call's (its size and tag) and the rings are empty:
   write my message into its receive buffer, then read its message over mine, the GIL released,
   and say so by my count; the offerer, out of place, copies nothing (bind_half(): TAKEN_WHOLE).
   Without it the offer waited for an answer that never came while I went through the ring.
   HALF_BY_ONE, HALF_NOT_TAKEN (nothing moved: the ring's way follows), HALF_PEER_LOST. */
static int answer_offer(Express *e, Lane *lane, char *buf, uint64_t n, uint64_t tag, pid_t pid) {
    uint64_t *deal = lane->deal, *theirs = lane->peer_slot, *slot = lane->my_slot;
    uint64_t expected = lane->low ? OFFER_HIGH : OFFER_LOW;
    if (!rings_empty(lane) || __atomic_load_n(deal, __ATOMIC_ACQUIRE) != expected ||
        (__atomic_load_n(&theirs[SLOT_NBYTES], __ATOMIC_ACQUIRE) & ~PUSH_MODE) != n ||
        __atomic_load_n(&theirs[SLOT_TAG], __ATOMIC_ACQUIRE) != tag)
        return HALF_NOT_TAKEN;
    uint64_t their_send = __atomic_load_n(&theirs[SLOT_SEND], __ATOMIC_ACQUIRE);
    uint64_t their_recv = __atomic_load_n(&theirs[SLOT_RECV], __ATOMIC_ACQUIRE);
    if (their_send == their_recv) return HALF_NOT_TAKEN; /* an offer in place (its halves): mine would overwrite it */
    note_cpu(lane);
    __atomic_store_n(&slot[SLOT_SEND], (uint64_t)(uintptr_t)buf, __ATOMIC_RELAXED);
    __atomic_store_n(&slot[SLOT_RECV], (uint64_t)(uintptr_t)buf, __ATOMIC_RELAXED); /* (its peer_lost() probe) */
    if (!__atomic_compare_exchange_n(deal, &expected, TAKEN_WHOLE, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
        return HALF_NOT_TAKEN; /* withdrawn meanwhile (a new offer writes its slot before it) */
    uint64_t count = __atomic_load_n(&slot[SLOT_DONE], __ATOMIC_RELAXED) + 1;
    int ok;
    Py_BEGIN_ALLOW_THREADS
    ok = cma_copy(pid, 1, buf, their_recv, (size_t)n) && cma_copy(pid, 0, buf, their_send, (size_t)n);
    Py_END_ALLOW_THREADS
    if (!ok) return HALF_PEER_LOST;
    __atomic_store_n(&slot[SLOT_DONE], count, __ATOMIC_RELEASE);
    return await_peer_half(e, lane, count, pid, their_recv) ? HALF_BY_ONE : HALF_PEER_LOST;
}

#endif
