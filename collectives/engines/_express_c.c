/* The point-to-point engine's express lane: a blocking send or receive of a message of up to a
   quarter ring over shared memory in one C call; and a sendrecv, both ways in one call, from
   ``single_bytes`` by single copy (_swap.h; see "sendrecv" below), from ``apart_bytes`` where the
   message and the receive's buffer are parts of different arrays.

   Through the engine (engines/point_to_point.py) a send or receive makes a Work, posts a
   request on its channel's intake and drives the progress loop until the frame has moved:
   for a small message, many times the copy in interpreter dispatch (docs/performance.md,
   "Thirteenth round"). Here a blocking send writes its whole frame (transports/base.py: a 16-byte
   header ``tag u64 | nbytes u32 | flags u32``, then the payload) straight into its ring in the
   peer's inbox (transports/shm.py) and rings the peer's doorbell; a blocking receive spins on
   its ring for ``spin_ns`` (then ``yield_ns`` of sched_yield) until a whole frame of its tag
   and size is there, and copies it out.

   It takes the lane only when nothing could come between: the communicator's lock is free (it
   is held here, so no other thread drives the channels meanwhile), the channel has no error,
   nothing on its intake, no send queued (a send) or no frame half read, unexpected or posted
   for this tag and no header held back but this receive's own (a receive), and no receive of
   this tag is held by the engine (from any source). Otherwise, and wherever a frame does not fit the ring's free room or its header
   differs from what the receive expects, it returns False having moved nothing, and the engine
   runs the call (with its waits, errors and timeouts). It never sleeps and never raises for
   the peer: the GIL stays held, and every wait here is bounded.

   Ring words (tail, head) are u64 counts of bytes since the start, each written by one side
   only: the writer publishes the tail after the bytes (release), the reader the head after
   copying them out. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <sched.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "_waits.h"
#include "_lane_ring.h" /* the Lane: its rings, frames written and taken */

typedef struct {
    PyObject_HEAD
    Py_ssize_t size, max_bytes, single_bytes, apart_bytes, aside_bytes, half_bytes, half_out_bytes, push_bytes;
    Lane *lanes;                   /* [size] */
    PyObject *lock, *held, *numbers, *keep;
    PyObject *aside;               /* a bytearray: what a sendrecv in place sends (``aside``) */
    char *bounce;                  /* the in-place swap's pieces (_half_swap.h), taken at its first */
    PyTypeObject *array_type;      /* numpy.ndarray: the lane takes exact ndarrays ... */
    PyObject *dtypes;              /* ... of these dtypes (a tuple, matched by identity) */
    uint64_t tag_bit;
    long long max_tag;
    int64_t spin_ns, yield_ns, swap_yield_ns;
    int64_t shift_yield_ns;        /* swap_yield_ns for a swap with two peers (to != from: a shift) */
    long long sends, recvs, swaps; /* calls the lane took (tests and benchmarks read them) */
    long long besides;             /* waits that yielded from the start, the peer on my CPU (beside()) */
    long long crowded_waits;       /* swap waits that yielded at every poll, ranks outnumbering cores */
    long long crowded_frame_waits; /* receives' frame waits that yielded at every poll, ranks outnumbering cores */
    long long halves;              /* sendrecvs the lane swapped by halves (_half_swap.h) */
    long long pushes;              /* ... of them, those where each rank wrote its whole message (push()) */
    long long taken_whole;         /* mixed pairs' calls bound by the in-place rank taking the offer (answer_offer()) */
    long long unoffered;           /* out-of-place calls that offered nothing, the peer seen in place */
    long long declined;            /* offers to swap by halves or push withdrawn at the peer's frame (bind_half()) */
    long long expired;             /* ... withdrawn with no answer by the end of their wait */
} Express;

static PyObject *s_dtype, *s_base, *s_acquire, *s_release, *s_error, *s_sendq, *s_intake, *s_eof, *s_rx_have, *s_rx_target,
    *s_rx_deferred, *s_posted, *s_unexpected;

#include "_lane_gate.h" /* whether the engine lets the lane take a call */

/* The lane to ``peer`` (a Python int), or NULL where the call is not the lane's: not an exact
   int (a numpy integer or a bool), out of range, or no shm channel. */
static Lane *lane_of(Express *e, PyObject *peer) {
    if (!PyLong_CheckExact(peer)) return NULL;
    Py_ssize_t p = PyLong_AsSsize_t(peer);
    if (p == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        return NULL;
    }
    if (p < 0 || p >= e->size || e->lanes[p].channel == NULL) return NULL;
    return &e->lanes[p];
}

/* The wire tag of the user's ``tag`` (an exact int in 0..max_tag), or 0 where it is not one
   (the engine's checks then say what is wrong; wire tags always carry tag_bit). */
static uint64_t wire_tag(Express *e, PyObject *tag) {
    if (!PyLong_CheckExact(tag)) return 0;
    long long t = PyLong_AsLongLong(tag);
    if (t == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    return t < 0 || t > e->max_tag ? 0 : e->tag_bit | (uint64_t)t;
}

/* Whether ``x`` is an exact ndarray of one of the lane's dtypes (anything else, a torch
   tensor, a subclass, an unsupported dtype, goes to the engine, which stages or refuses it). */
static int plain(Express *e, PyObject *x) {
    if (Py_TYPE(x) != e->array_type) return 0;
    PyObject *dtype = PyObject_GetAttr(x, s_dtype);
    if (dtype == NULL) {
        PyErr_Clear();
        return 0;
    }
    int known = 0;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(e->dtypes) && !known; i++) known = PyTuple_GET_ITEM(e->dtypes, i) == dtype;
    Py_DECREF(dtype);
    return known;
}

/* The lane, wire tag and buffer of a call ``(x, peer, tag)``: 1 where the lane may take it (the
   buffer then to release), 0 where the engine must (nothing held), -1 with an error set. */
static int take_call(Express *e, PyObject *const *args, Py_ssize_t nargs, const char *usage, int flags, Lane **lane,
                     uint64_t *tag, Py_buffer *view) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, usage);
        return -1;
    }
    *lane = lane_of(e, args[1]);
    *tag = wire_tag(e, args[2]);
    if (*lane == NULL || *tag == 0 || !plain(e, args[0])) return 0;
    if (PyObject_GetBuffer(args[0], view, flags) != 0) {
        PyErr_Clear(); /* not contiguous, or read-only for a receive: the engine says so */
        return 0;
    }
    return 1;
}

/* Take the communicator's lock without waiting: 1 taken, 0 held elsewhere, -1 error. */
static int try_lock(Express *e) {
    PyObject *got = PyObject_CallMethodOneArg(e->lock, s_acquire, Py_False);
    if (got == NULL) return -1;
    int taken = PyObject_IsTrue(got);
    Py_DECREF(got);
    return taken;
}

static int unlock(Express *e) {
    PyObject *r = PyObject_CallMethodNoArgs(e->lock, s_release);
    if (r == NULL) return -1;
    Py_DECREF(r);
    return 0;
}

/* What a call the lane took returns: its number in the engine's count of point-to-point calls
   (a new reference; an int, so true), or NULL with an error set. */
static PyObject *number_call(Express *e) {
    PyObject *n = PyIter_Next(e->numbers);
    if (n == NULL && !PyErr_Occurred()) PyErr_SetString(PyExc_RuntimeError, "the point-to-point count ended");
    return n;
}

/* -- send --------------------------------------------------------------------------------- */

/* send(x, dst, tag) -> the call's number where ``x`` (a C-contiguous buffer) went to rank
   ``dst``, else False. */
static PyObject *Express_send(Express *e, PyObject *const *args, Py_ssize_t nargs) {
    Lane *lane;
    uint64_t tag;
    Py_buffer view;
    int ours = take_call(e, args, nargs, "send(x, dst, tag)", PyBUF_C_CONTIGUOUS, &lane, &tag, &view);
    if (ours < 0) return NULL;
    if (ours == 0) Py_RETURN_FALSE;
    int sent = 0;
    if (view.len <= e->max_bytes) {
        int taken = try_lock(e);
        if (taken < 0) goto fail;
        if (taken) {
            int free_ = send_free(lane);
            if (free_ > 0) sent = write_frame(lane, tag, view.buf, (uint64_t)view.len);
            if (unlock(e) < 0 || free_ < 0) goto fail;
        }
    }
    PyBuffer_Release(&view);
    if (!sent) Py_RETURN_FALSE;
    e->sends++;
    return number_call(e);
fail:
    PyBuffer_Release(&view);
    return NULL;
}

/* -- receive ------------------------------------------------------------------------------ */

/* Spin (then yield) until the frame is taken or is not ours, or the wait is over; a frame
   taken headless (its header held back by the engine) is then no longer the engine's. Where
   ranks outnumber cores (no spin) every poll yields, as the swap's wait does (_swap.h). */
static int wait_frame(Express *e, Lane *lane, uint64_t tag, char *buf, uint64_t n, int headless) {
    int got = take_frame(lane, tag, buf, n, headless);
    if (got == NOT_YET && !__atomic_load_n(lane->peer_closed, __ATOMIC_ACQUIRE)) {
        /* Where ranks spin, the spin also covers the writer's copy of a frame this size (about
           n/8 ns, 8 GB/s: the tail is published once the whole frame is in). */
        int64_t spin = e->spin_ns > 0 ? e->spin_ns + (int64_t)(n / 8) : 0;
        int64_t start = now_ns(), spin_until = start + spin, yield_until = spin_until + e->yield_ns;
        int yielding = spin <= 0;
        if (yielding) e->crowded_frame_waits++;
        for (unsigned i = 1;; i++) {
            if ((got = take_frame(lane, tag, buf, n, headless)) != NOT_YET) break;
            if ((i & 63) == 0 || yielding) {
                int64_t t = now_ns();
                if (t >= yield_until) break;
                if (t >= spin_until) sched_yield();
            } else {
                cpu_relax();
            }
        }
    }
    if (got == TAKEN && headless && PyObject_SetAttr(lane->channel, s_rx_deferred, Py_None) < 0) return -1;
    return got;
}

/* recv(x, src, tag) -> the call's number where a message from rank ``src`` filled ``x`` (a
   writable C-contiguous buffer), else False. */
static PyObject *Express_recv(Express *e, PyObject *const *args, Py_ssize_t nargs) {
    Lane *lane;
    uint64_t tag;
    Py_buffer view;
    int ours = take_call(e, args, nargs, "recv(x, src, tag)", PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE, &lane, &tag, &view);
    if (ours < 0) return NULL;
    if (ours == 0) Py_RETURN_FALSE;
    int got = NOT_YET;
    PyObject *key = NULL;
    if (view.len <= e->max_bytes && !__atomic_load_n(lane->my_closed, __ATOMIC_ACQUIRE)) {
        key = PyLong_FromUnsignedLongLong(tag);
        if (key == NULL) goto fail;
        int taken = try_lock(e);
        if (taken < 0) goto fail;
        if (taken) {
            int headless = 0, free_ = recv_free(e, lane, key, 0, tag, (uint64_t)view.len, &headless);
            if (free_ > 0) got = wait_frame(e, lane, tag, view.buf, (uint64_t)view.len, headless);
            if (unlock(e) < 0 || free_ < 0 || got < 0) goto fail;
        }
    }
    Py_XDECREF(key);
    PyBuffer_Release(&view);
    if (got != TAKEN) Py_RETURN_FALSE;
    e->recvs++;
    return number_call(e);
fail:
    Py_XDECREF(key);
    PyBuffer_Release(&view);
    return NULL;
}

/* -- sendrecv: both directions in one call ---------------------------------------------- */

#include "_swap.h" /* the single-copy swap: my RTS out, the peer's message read, TAKEN both ways */
#include "_half_swap.h" /* with one peer: each rank moves half of the message both ways */

/* The lane's buffer for the copy of a message sent in place, of at least ``n`` bytes (a
   bytearray, kept between calls: a fresh one would cost its page faults each time). One that
   a send handed to the engine still holds (a reference or a view of it besides the lane's) is
   left to it and a fresh one taken; the engine lets go of it once the send is done, which a
   blocking sendrecv waits for. NULL with an error set. */
static PyObject *aside(Express *e, Py_ssize_t n) {
    if (e->aside != NULL && (Py_REFCNT(e->aside) > 1 || ((PyByteArrayObject *)e->aside)->ob_exports > 0))
        Py_CLEAR(e->aside);
    if (e->aside == NULL || PyByteArray_GET_SIZE(e->aside) < n) {
        Py_CLEAR(e->aside);
        e->aside = PyByteArray_FromStringAndSize(NULL, n);
    }
    return e->aside;
}

/* The object that owns the memory of ``x`` (numpy keeps the owner as a view's ``base``): a new
   reference, ``x`` itself where it has no base. */
static PyObject *owner(PyObject *x) {
    PyObject *b = PyObject_GetAttr(x, s_base);
    if (b == NULL) PyErr_Clear();
    if (b == NULL || b == Py_None) {
        Py_XDECREF(b);
        Py_INCREF(x);
        return x;
    }
    return b;
}

/* Whether ``x`` and ``out`` are parts of different arrays. A block of one array sent while
   another block of it is received (hypercube_perf's exchange) reads slower by single copy
   than through the ring where the sender has just written its block; separate arrays do not
   (docs/performance.md, "Eighteenth round, point to point at 256 KiB"). */
static int apart(PyObject *x, PyObject *out) {
    PyObject *a = owner(x), *b = owner(out);
    int different = a != b;
    Py_DECREF(a);
    Py_DECREF(b);
    return different;
}

/* Whether the next frame in ``lane``'s in-ring is a whole plain message of ``tag`` and ``n``
   bytes (its header published with the frame's tail: the frame is whole). */
static int framed(const Lane *lane, uint64_t tag, Py_ssize_t n) {
    uint64_t wire, have;
    uint32_t nbytes, flags;
    return peek(lane, &wire, &nbytes, &flags, &have) && wire == tag && flags == FLAG_END && nbytes == (uint64_t)n;
}

/* The swap by halves with the peer of ``lane`` where the channel and the engine let it go now
   (as a swap's gate: nothing queued, held or half read, single copy known to work both ways):
   HALF_DONE, HALF_NOT_TAKEN, HALF_PEER_LOST, HALF_ASK (single copy not yet known: the engine's
   call asks, up to HALF_ASKS calls a lane), or -1 with an error set. */
static int by_halves(Express *e, Lane *lane, PyObject *key, const char *send, char *recv, uint64_t n, uint64_t tag,
                     int *pushed) {
    int r = send_free(lane);
    if (r > 0) r = recv_free(e, lane, key, 0, tag, n, NULL);
    if (r > 0) r = single_copy_state(lane->channel, s_offers);
    if (r == WORKS) r = single_copy_state(lane->channel, s_reads);
    if (r < 0) return -1;
    if (r == UNKNOWN && lane->asks < HALF_ASKS) {
        lane->asks++;
        return HALF_ASK;
    }
    if (r != WORKS) return HALF_NOT_TAKEN;
    long long pid;
    if (single_copy_int(lane->channel, s_pid, &pid, 0) < 0) return -1;
    return half_swap(e, lane, send, recv, n, tag, (pid_t)pid, pushed);
}

/* In place below ``half_bytes`` (through the ring otherwise), the peer's offer of this call
   taken whole where the channel and the engine let it go now (as by_halves()): HALF_BY_ONE,
   HALF_NOT_TAKEN (no offer, or not now), HALF_PEER_LOST, or -1 with an error set. */
static int take_offer(Express *e, Lane *lane, PyObject *key, char *buf, uint64_t n, uint64_t tag) {
    if (!offered(lane)) return HALF_NOT_TAKEN; /* (the gates only where there is an offer) */
    int r = send_free(lane);
    if (r > 0) r = recv_free(e, lane, key, 0, tag, n, NULL);
    if (r > 0) r = single_copy_state(lane->channel, s_offers);
    if (r == WORKS) r = single_copy_state(lane->channel, s_reads);
    if (r < 0) return -1;
    if (r != WORKS) return HALF_NOT_TAKEN;
    long long pid;
    if (single_copy_int(lane->channel, s_pid, &pid, 0) < 0) return -1;
    return answer_offer(e, lane, buf, n, tag, (pid_t)pid);
}

/* sendrecv(x, dst, out, src, tag) -> True where ``x`` went to rank ``dst`` and a message from
   ``src`` filled ``out``; (send request or None, received) where part moved and the engine
   finishes the rest (an unfinished send is on its channel, a receive not done is not posted);
   False where nothing moved. Messages of up to ``max_bytes`` below ``single_bytes`` (below
   ``apart_bytes`` where ``x`` and ``out`` are parts of different arrays) go as send() and
   recv() do; larger ones by single copy where the channels allow. */
static PyObject *Express_sendrecv(Express *e, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "sendrecv(x, dst, out, src, tag)");
        return NULL;
    }
    Lane *to = lane_of(e, args[1]), *from = lane_of(e, args[3]);
    uint64_t tag = wire_tag(e, args[4]);
    if (to == NULL || tag == 0 || !plain(e, args[0])) Py_RETURN_FALSE;
    Py_buffer send, recv;
    if (from == NULL || !plain(e, args[2]) || PyObject_GetBuffer(args[2], &recv, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE) != 0) {
        PyErr_Clear(); /* the receive is the engine's (which says what is wrong with it): the send as send() */
        PyObject *const send_args[3] = {args[0], args[1], args[4]};
        PyObject *sent = Express_send(e, send_args, 3);
        if (sent == NULL || sent == Py_False) return sent;
        Py_DECREF(sent);
        return Py_BuildValue("(OO)", Py_None, Py_False);
    }
    if (PyObject_GetBuffer(args[0], &send, PyBUF_C_CONTIGUOUS) != 0) {
        PyErr_Clear();
        PyBuffer_Release(&recv);
        Py_RETURN_FALSE;
    }
    PyObject *result = Py_False, *key = NULL;
    Py_INCREF(result);
    /* In place, a swap sends a copy (``aside``), from ``aside_bytes``: below, the ring's two
       copies cost no more. */
    int in_place = overlaps(send.buf, send.len, recv.buf, recv.len);
    /* With one peer, in place from ``half_bytes``, out of place from ``half_out_bytes`` (up to
       ``max_bytes`` where ``x`` and ``out`` are parts of different arrays, beyond which their
       whole swap costs less): the halves first (_half_swap.h), and only where the peer does
       not take them, the copy aside, the swap or the ring. */
    int halves = to == from && to->deal != NULL && send.len == recv.len &&
                 (in_place ? send.buf == recv.buf && send.len >= e->half_bytes
                           : send.len >= e->push_bytes && (send.len <= e->max_bytes || !apart(args[0], args[2])));
    /* Out of place from ``push_bytes`` below ``half_out_bytes``: each rank writes its whole
       message into the peer's receive (push()), both bound as for the halves. */
    int pushed = halves && !in_place && send.len < e->half_out_bytes;
    Py_ssize_t least = e->single_bytes;
    if (!in_place && send.len >= e->apart_bytes && send.len < least && apart(args[0], args[2])) least = e->apart_bytes;
    int single = send.len >= least && recv.len >= least && !(in_place && send.len < e->aside_bytes);
    /* Out of place where the peer's last call of this size and tag went through the ring in place
       (the mixed pair: seen_in_place()), and the peer offers nothing now: the ring's way at once,
       my frame beside the peer's, where an offer would wait for the peer's frame and copy after it. */
    int offering = halves && !in_place && to->deal != NULL;
    if (offering && send.len <= e->max_bytes && to->in_place_n == (uint64_t)send.len && to->in_place_tag == tag &&
        !offered(to))
        halves = 0, single = 0, e->unoffered++;
    int beyond_frame = !single && (send.len > e->max_bytes || recv.len > e->max_bytes); /* only the engine's */
    if (beyond_frame && !halves) goto done;
    key = PyLong_FromUnsignedLongLong(tag);
    if (key == NULL) goto fail;
    int taken = try_lock(e);
    if (taken < 0) goto fail;
    if (!taken) goto done;
    /* In place from ``half_bytes``, where the peer offers to push this call (out of place below
       ``half_out_bytes``, which lies beyond ``half_bytes``): taken whole, as below ``half_bytes``
       (the offer of my halves would not bind with a push). */
    int take_push = halves && in_place && send.len < e->half_out_bytes && offered(to) &&
                    (__atomic_load_n(&to->peer_slot[SLOT_NBYTES], __ATOMIC_ACQUIRE) & PUSH_MODE);
    if (halves && !take_push) {
        int h = by_halves(e, to, key, send.buf, recv.buf, (uint64_t)recv.len, tag, &pushed);
        if (h == HALF_ASK) {
            if (unlock(e) < 0) goto fail;
            goto done;
        }
        if (h != HALF_NOT_TAKEN) {
            Py_DECREF(result);
            result = h == HALF_DONE || h == HALF_BY_ONE ? (Py_INCREF(Py_True), Py_True)
                     : h == HALF_PEER_LOST ? Py_BuildValue("(OO)", Py_None, Py_False) : NULL;
            if (h == HALF_DONE) e->halves++, e->pushes += pushed;
            if (h == HALF_BY_ONE) e->taken_whole++;
            if (unlock(e) < 0 || result == NULL) goto fail;
            goto done;
        }
        if (beyond_frame) {
            if (unlock(e) < 0) goto fail;
            goto done;
        }
    }
    /* In place through the ring, an out-of-place peer's offer (a push, or the halves) taken whole:
       both messages moved by me, none through the ring. */
    if (take_push || (!halves && !single && in_place && to == from && to->deal != NULL && send.buf == recv.buf &&
                      send.len == recv.len && send.len >= e->push_bytes && send.len < e->half_bytes)) {
        int h = take_offer(e, to, key, recv.buf, (uint64_t)recv.len, tag);
        if (h < 0) {
            unlock(e);
            goto fail;
        }
        if (h != HALF_NOT_TAKEN) {
            Py_DECREF(result);
            result = h == HALF_BY_ONE ? (Py_INCREF(Py_True), Py_True) : Py_BuildValue("(OO)", Py_None, Py_False);
            if (h == HALF_BY_ONE) e->taken_whole++;
            if (unlock(e) < 0 || result == NULL) goto fail;
            goto done;
        }
        mark_in_place(to, (uint64_t)send.len, tag);
    }
    /* The peer's frame of this very call already in the ring (the mixed pair from
       ``apart_bytes``: the peer in place below ``half_bytes`` sent through the ring, and my
       offer, if any, was declined at it): mine goes the ring's way too, where an RTS would
       only hand both calls to the engine. */
    if (single && !in_place && send.len <= e->max_bytes && recv.len <= e->max_bytes && framed(from, tag, recv.len))
        single = 0;
    int r = send_free(to), receive = 1, headless = 0;
    if (r > 0) r = receive = recv_free(e, from, key, single, tag, (uint64_t)recv.len, single ? NULL : &headless);
    if (r == 0 && receive == 0 && !single) r = 1; /* the engine's receive: the send as send() */
    if (r > 0 && single) {
        int sends = single_copy_state(to->channel, s_offers), reads = sends < 0 ? -1 : single_copy_state(from->channel, s_reads);
        r = sends < 0 || reads < 0 ? -1 : sends == WORKS && reads == WORKS ? 1 : 0;
        PyObject *x = args[0];
        const char *from_buf = send.buf;
        if (r > 0 && in_place) {
            x = aside(e, send.len);
            if (x == NULL) r = -1;
            else {
                char *copy = PyByteArray_AS_STRING(x);
                memcpy(copy, send.buf, (size_t)send.len);
                from_buf = copy;
            }
        }
        if (r > 0) {
            Py_DECREF(result);
            result = swap(e, to, from, x, from_buf, (uint64_t)send.len, &recv, tag, key);
            if (result != NULL && result != Py_False) e->swaps++;
        } else if (r == 0 && sends != UNKNOWN && reads != UNKNOWN && send.len <= e->max_bytes && recv.len <= e->max_bytes) {
            int held = has_entry(from->channel, s_unexpected, key); /* never by single copy here: as send() and recv() */
            r = held < 0 ? -1 : 1;
            receive = !held;
            single = 0;
        }
    }
    if (r > 0 && !single && write_frame(to, tag, send.buf, (uint64_t)send.len)) {
        int got = !receive || __atomic_load_n(from->my_closed, __ATOMIC_ACQUIRE)
                      ? NOT_YET : wait_frame(e, from, tag, recv.buf, (uint64_t)recv.len, headless);
        Py_DECREF(result);
        if (got < 0) {
            unlock(e);
            result = NULL;
            goto fail;
        }
        result = got == TAKEN ? (Py_INCREF(Py_True), Py_True) : Py_BuildValue("(OO)", Py_None, Py_False);
        e->sends++;
        if (got == TAKEN) e->recvs++;
        if (got == TAKEN && offering) seen_in_place(from, (uint64_t)recv.len, tag);
    }
    if (unlock(e) < 0 || r < 0 || result == NULL) goto fail;
done:
    Py_XDECREF(key);
    PyBuffer_Release(&send);
    PyBuffer_Release(&recv);
    return result;
fail:
    Py_XDECREF(result);
    Py_XDECREF(key);
    PyBuffer_Release(&send);
    PyBuffer_Release(&recv);
    return NULL;
}

/* -- the type ----------------------------------------------------------------------------- */

static void Express_dealloc(Express *e) {
    if (e->lanes != NULL) {
        for (Py_ssize_t i = 0; i < e->size; i++) Py_XDECREF(e->lanes[i].channel);
        PyMem_Free(e->lanes);
    }
    Py_XDECREF(e->lock);
    Py_XDECREF(e->held);
    Py_XDECREF(e->numbers);
    Py_XDECREF(e->keep);
    Py_XDECREF(e->aside);
    free(e->bounce);
    Py_XDECREF(e->array_type);
    Py_XDECREF(e->dtypes);
    Py_TYPE(e)->tp_free((PyObject *)e);
}

/* Express(size, lanes: {peer: (channel, words)}, keep, lock, held, numbers, array_type, dtypes,
   max_bytes, tag_bit, max_tag, spin_ns, yield_ns, single_bytes, swap_yield_ns[, apart_bytes, aside_bytes,
   half_bytes, half_out_bytes, push_bytes, shift_yield_ns]) */
static PyObject *Express_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    Py_ssize_t size, max_bytes, single_bytes, apart_bytes = -1, aside_bytes = -1, half_bytes = -1,
               half_out_bytes = -1, push_bytes = -1;
    PyObject *lanes, *keep, *lock, *held, *numbers, *array_type, *dtypes;
    unsigned long long tag_bit;
    long long max_tag, spin_ns, yield_ns, swap_yield_ns, shift_yield_ns = -1;
    static char *names[] = {"size", "lanes", "keep", "lock", "held", "numbers", "array_type", "dtypes", "max_bytes", "tag_bit", "max_tag",
                            "spin_ns", "yield_ns", "single_bytes", "swap_yield_ns", "apart_bytes", "aside_bytes",
                            "half_bytes", "half_out_bytes", "push_bytes", "shift_yield_ns", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "nO!OOO!OO!O!nKLLLnL|nnnnnL", names, &size, &PyDict_Type, &lanes, &keep,
                                     &lock, &PyDict_Type, &held, &numbers, &PyType_Type, &array_type, &PyTuple_Type,
                                     &dtypes, &max_bytes, &tag_bit, &max_tag, &spin_ns,
                                     &yield_ns, &single_bytes, &swap_yield_ns, &apart_bytes, &aside_bytes,
                                     &half_bytes, &half_out_bytes, &push_bytes, &shift_yield_ns))
        return NULL;
    if (size < 1 || tag_bit == 0 || max_bytes < 0) {
        PyErr_SetString(PyExc_ValueError, "Express: size >= 1, tag_bit != 0 and max_bytes >= 0");
        return NULL;
    }
    Express *e = (Express *)type->tp_alloc(type, 0);
    if (e == NULL) return NULL;
    e->lanes = PyMem_Calloc((size_t)size, sizeof(Lane));
    if (e->lanes == NULL) {
        Py_DECREF(e);
        return PyErr_NoMemory();
    }
    e->size = size;
    PyObject *peer, *entry;
    Py_ssize_t pos = 0;
    while (PyDict_Next(lanes, &pos, &peer, &entry)) {
        Py_ssize_t p = PyLong_AsSsize_t(peer);
        if (p == -1 && PyErr_Occurred()) goto fail;
        if (p < 0 || p >= size || !PyTuple_Check(entry) || PyTuple_GET_SIZE(entry) != 2) {
            PyErr_SetString(PyExc_ValueError, "lanes: {peer below size: (channel, words)}");
            goto fail;
        }
        if (set_lane(&e->lanes[p], PyTuple_GET_ITEM(entry, 0), PyTuple_GET_ITEM(entry, 1)) < 0) goto fail;
    }
    Py_INCREF(keep), Py_INCREF(lock), Py_INCREF(held), Py_INCREF(numbers), Py_INCREF(array_type), Py_INCREF(dtypes);
    e->keep = keep, e->lock = lock, e->held = held, e->numbers = numbers;
    e->array_type = (PyTypeObject *)array_type, e->dtypes = dtypes;
    e->max_bytes = max_bytes;
    e->single_bytes = single_bytes;
    e->apart_bytes = apart_bytes < 0 || apart_bytes > single_bytes ? single_bytes : apart_bytes;
    e->aside_bytes = aside_bytes < 0 ? max_bytes + 1 : aside_bytes;
    e->half_bytes = half_bytes < 0 ? PY_SSIZE_T_MAX : half_bytes;
    e->half_out_bytes = half_out_bytes < 0 ? e->half_bytes : half_out_bytes;
    e->push_bytes = push_bytes < 0 || push_bytes > e->half_out_bytes ? e->half_out_bytes : push_bytes;
    e->swap_yield_ns = swap_yield_ns;
    e->shift_yield_ns = shift_yield_ns < 0 ? swap_yield_ns : shift_yield_ns;
    e->tag_bit = tag_bit;
    e->max_tag = max_tag;
    e->spin_ns = spin_ns;
    e->yield_ns = yield_ns;
    return (PyObject *)e;
fail:
    Py_DECREF(e);
    return NULL;
}

/* close(): drop the lanes and what keeps their memory mapped, so that the transport's close
   can unmap it; every call after it goes to the engine. */
static PyObject *Express_close(Express *e, PyObject *unused) {
    (void)unused;
    if (e->lanes != NULL)
        for (Py_ssize_t i = 0; i < e->size; i++) Py_CLEAR(e->lanes[i].channel);
    e->size = 0;
    Py_CLEAR(e->keep);
    Py_RETURN_NONE;
}

static PyMethodDef Express_methods[] = {
    {"send", (PyCFunction)(void (*)(void))Express_send, METH_FASTCALL,
     "send(x, dst, tag) -> the call's number where x went to dst by the lane, else False (nothing moved)"},
    {"recv", (PyCFunction)(void (*)(void))Express_recv, METH_FASTCALL,
     "recv(x, src, tag) -> the call's number where a message from src filled x by the lane, else False"},
    {"sendrecv", (PyCFunction)(void (*)(void))Express_sendrecv, METH_FASTCALL,
     "sendrecv(x, dst, out, src, tag) -> True where both moved by the lane, (send request or None, received) where "
     "part did, else False"},
    {"close", (PyCFunction)Express_close, METH_NOARGS, "close(): drop the lanes; every later call goes to the engine"},
    {NULL, NULL, 0, NULL},
};

/* The counters, read-only ints: members read straight from the struct (one table, no getter each). */
#define COUNTER(name, doc) {#name, T_LONGLONG, offsetof(Express, name), READONLY, doc}
static PyMemberDef Express_members[] = {
    COUNTER(sends, "sends the lane took"),
    COUNTER(recvs, "receives the lane took"),
    COUNTER(swaps, "sendrecvs the lane began by single copy"),
    COUNTER(besides, "waits that yielded from the start, the peer on this CPU"),
    COUNTER(crowded_frame_waits, "receives' frame waits that yielded at every poll, ranks outnumbering cores"),
    COUNTER(crowded_waits, "swap waits that yielded at every poll, ranks outnumbering cores"),
    COUNTER(halves, "sendrecvs the lane swapped by halves"),
    COUNTER(pushes, "of them, those where each rank wrote its whole message"),
    COUNTER(taken_whole, "sendrecvs of a mixed pair (one rank in place) whose in-place rank moved both messages"),
    COUNTER(unoffered, "out-of-place sendrecvs through the ring at once, the peer last seen in place"),
    COUNTER(declined, "offers to swap by halves or push withdrawn at once, the peer's call through the ring"),
    COUNTER(expired, "offers to swap by halves or push withdrawn unanswered at the end of their wait"),
    {"shift_yield_ns", T_LONGLONG, offsetof(Express, shift_yield_ns), READONLY,
     "how long a swap with two peers yields for them (ns, beyond the peer's copy) before handing the call back"},
    {NULL, 0, 0, 0, NULL},
};
#undef COUNTER

static PyTypeObject ExpressType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "collectives.engines._express_c.Express",
    .tp_basicsize = sizeof(Express),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Blocking sends and receives of small messages straight through the shm rings.",
    .tp_new = Express_new,
    .tp_dealloc = (destructor)Express_dealloc,
    .tp_methods = Express_methods,
    .tp_members = Express_members,
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_express_c", "The point-to-point express lane.", -1, NULL};

PyMODINIT_FUNC PyInit__express_c(void) {
    if (PyType_Ready(&ExpressType) < 0) return NULL;
#define INTERN(var, text) if ((var = PyUnicode_InternFromString(text)) == NULL) return NULL
    INTERN(s_dtype, "dtype");
    INTERN(s_base, "base");
    INTERN(s_acquire, "acquire");
    INTERN(s_release, "release");
    INTERN(s_error, "error");
    INTERN(s_sendq, "_sendq");
    INTERN(s_intake, "_intake");
    INTERN(s_eof, "_eof");
    INTERN(s_rx_have, "_rx_have");
    INTERN(s_rx_target, "_rx_target");
    INTERN(s_rx_deferred, "_rx_deferred");
    INTERN(s_posted, "_posted");
    INTERN(s_unexpected, "_unexpected");
    INTERN(s_single_copy, "single_copy");
    INTERN(s_offers, "offers");
    INTERN(s_reads, "reads");
    INTERN(s_pid, "pid");
    INTERN(s_next_id, "_next_id");
    INTERN(s_awaiting, "_awaiting");
    INTERN(s_held_rts, "_held_rts");
    INTERN(s_drop_held_rts, "_drop_held_rts");
    INTERN(s_address, "address");
    INTERN(s_nbytes, "nbytes");
    INTERN(s_id, "id");
#undef INTERN
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    Py_INCREF(&ExpressType);
    if (PyModule_AddObject(m, "Express", (PyObject *)&ExpressType) < 0) {
        Py_DECREF(&ExpressType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
