/* The happy path of the small-window collectives (engines/small.py) in one C call.

   A small call is a few copies, one flag store, a doorbell ring and a wait on each peer's
   flag; in Python each of those is an interpreter dispatch of 0.1-0.4 us, more than the work.
   Here a call does them all, spinning at most ``spin_ns`` (then ``yield_ns`` of sched_yield)
   on a late peer. It never sleeps and never reports an error: where a peer is late or a
   byte count differs it returns how far it got, and the Python plan finishes the call with
   its own waits (futex sleep, liveness and timeout checks) and errors. The GIL stays held,
   so the windows cannot be closed under a running call (every wait here is bounded).

   Layout (engines/direct.py, transports/shm_window.py): every rank's window starts with a
   flag area of u64 words, one per 64-byte line, written only by their owner; ``areas``
   are the data areas a call uses (the two halves, or the pipelined broadcast's slots) of
   every rank, in window-rank order. Reductions fold in rank order 0..p-1, element by
   element, as numpy's ufuncs do: the same bits as the Python plans. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <sched.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <linux/futex.h>
#include <sys/syscall.h>
#endif

#include "_copy.h"
#include "_flags.h"
#include "_fold.h"
#include "_sequences.h" /* the constructor's addresses */

enum { KIND_ALL_REDUCE = 0, KIND_ALL_GATHER = 1, KIND_BARRIER = 2, KIND_BROADCAST = 3, KIND_REDUCE = 4, KIND_GATHER = 5,
       KIND_SCATTER = 6, KIND_ALL_TO_ALL = 7, KIND_ALL_REDUCE_TWO_SHOT = 8 };
/* Where ranks outnumber CPUs (no spin, a yield budget) a plan of fewer bytes than this waits
   for its peers' flags yielding at every poll (reach(), _flags.h), as the lane's waits do; from
   this size (the two-shot all-reduce's, direct_routes.TWO_SHOT_BYTES), where a peer's copies and
   folds outlast many turns, a yield every 64th poll as before (docs/performance.md,
   "Twenty-eighth round, crowded waits by size"). */
#define CROWDED_POLL_BYTES ((Py_ssize_t)64 << 10)

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall; /* how Python calls it: SmallPlan_vectorcall */
    FlagSet w;              /* the window's flags, waits and doorbells (_flags.h) */
    int kind, flag, len_slot, exit_slot, red_flag, areas, op, dtype;
    Py_ssize_t nbytes, red_offset, red_bytes;
    uint64_t len_word;
    char **area;            /* [areas * ranks]: area m of rank r at m * ranks + r */
    int len_ring;           /* the slot kinds: call b's byte count is at len_slot + b % len_ring */
    int64_t root_yield_ns;  /* a reduce's root yields this long to late writers (the others w.yield_ns) */
    PyObject *keep;         /* what keeps the mappings alive */
} SmallPlan;


/* Folds ``nbytes`` at ``offset`` of every rank's half into ``out`` (``out`` already offset) in
   rank order: the first two sources in one pass (a copy where there is one rank). My own source
   is ``x`` where that is safe: the same bytes as my half, still in this core's cache and not
   among the lines my peers are reading from my half at that moment. Safe where ``out`` does not
   overlap ``x``, or is the same bytes and my source is read in the first pass (element by
   element, before the element is written). */
static void fold_halves(SmallPlan *p, char **half, const char *x, char *out, size_t offset, Py_ssize_t nbytes) {
    int me = p->w.me, ranks = p->w.ranks;
    const char *mine = x + offset;
    int apart = out + nbytes <= x || x + p->nbytes <= out;
    if (!(apart || (out == mine && me <= 1))) mine = half[me] + offset;
#define SOURCE(q) ((q) == me ? mine : half[q] + offset)
    if (ranks > 1) fold3(p->dtype, p->op, out, SOURCE(0), SOURCE(1), nbytes);
    else memcpy(out, SOURCE(0), (size_t)nbytes);
    for (int q = 2; q < ranks; q++) fold(p->dtype, p->op, out, SOURCE(q), nbytes);
#undef SOURCE
}



/* -- the calls ----------------------------------------------------------------------- */

static int begun(SmallPlan *p, uint64_t s) {
    for (int q = 0; q < p->w.ranks; q++)
        if (q != p->w.me && !reach(&p->w, q, p->flag, s - 1)) return 0;
    return 1;
}

static int arrived(SmallPlan *p, int q, uint64_t s, int len_slot) {
    return reach(&p->w, q, p->flag, s) && load_flag(&p->w, q, len_slot) == p->len_word;
}

/* A barrier returns once every peer runs again. A peer that waited beyond its spin for
   barrier s says so (its ``exit_slot`` word is 2s until it leaves, then 2s + 1); it may be
   asleep, and a futex wake-up takes tens of microseconds on a virtual machine. The rank that
   completes the barrier waits (yielding: the woken peer may be queued on this CPU) until such
   peers have left, at most EXIT_WAIT_NS, so that the ranks leave together, as they do from
   MPI's spinning barrier: a clock started after a barrier then starts alike on every rank.
   Where ranks outnumber CPUs too: there a woken rank can wait milliseconds for a core, and
   the ranks that left without it would wait for it in their next call instead. */
#define EXIT_WAIT_NS 2000000

static void await_exits(SmallPlan *p, uint64_t s) {
    if (p->exit_slot < 0) return;
    int64_t until = 0;
    for (int q = 0; q < p->w.ranks; q++) {
        if (q == p->w.me) continue;
        while (load_flag(&p->w, q, p->exit_slot) == 2 * s) {
            int64_t t = now_ns();
            if (until == 0) until = t + EXIT_WAIT_NS;
            else if (t >= until) return;
            sched_yield();
        }
    }
}

/* all_reduce / reduce_scatter / all_gather / all_to_all / barrier over the halves: returns s, 0 when
   nothing was done (a peer had not begun s - 1), or -s once s is posted but a peer is late
   or passed another count. */
static long long run_halves(SmallPlan *p, const char *x, char *out, uint64_t serial) {
    uint64_t s = serial + 1;
    int h = (int)(s & 1), len_slot = p->len_slot + h;
    if (!begun(p, s)) return 0;
    char **half = p->area + (size_t)h * p->w.ranks;
    if (p->kind != KIND_BARRIER) copy_bytes(half[p->w.me], x, (size_t)p->nbytes);
    set_word(&p->w, len_slot, p->len_word);
    post(&p->w, p->flag, s);
    if (p->kind == KIND_ALL_GATHER) {
        for (int q = 0; q < p->w.ranks; q++) {
            if (q != p->w.me && !arrived(p, q, s, len_slot)) return -(long long)s;
        }
        for (int q = 0; q < p->w.ranks; q++) {
            char *block = out + (size_t)q * p->nbytes;
            if (block != x) memcpy(block, half[q], (size_t)p->nbytes);
        }
        return (long long)s;
    }
    for (int q = 0; q < p->w.ranks; q++)
        if (q != p->w.me && !arrived(p, q, s, len_slot)) return -(long long)s;
    if (p->kind == KIND_ALL_TO_ALL) { /* block me of every rank's copy, in rank order (out may be x) */
        size_t k = (size_t)p->nbytes / (size_t)p->w.ranks;
        for (int q = 0; q < p->w.ranks; q++) memcpy(out + (size_t)q * k, half[q] + (size_t)p->w.me * k, k);
        return (long long)s;
    }
    if (p->kind == KIND_BARRIER) await_exits(p, s);
    if (p->kind == KIND_ALL_REDUCE && p->op != OP_NONE) {
        fold_halves(p, half, x, out, (size_t)p->red_offset, p->red_bytes);
    }
    return (long long)s;
}

/* Block q of a two-shot all-reduce, in bytes: the elements split as algorithms/schedule.py's
   ``partition`` splits them (the first count % ranks blocks one element longer). */
static void block_of(SmallPlan *p, int q, size_t *offset, size_t *length) {
    size_t item = (size_t)ITEM_SIZE[p->dtype], count = (size_t)p->nbytes / item, ranks = (size_t)p->w.ranks;
    size_t base = count / ranks, extra = count % ranks, i = (size_t)q;
    *offset = (i * base + (i < extra ? i : extra)) * item;
    *length = (base + (i < extra ? 1 : 0)) * item;
}

/* The two-shot all-reduce over the halves (small.TwoShotAllReducePlan): post x in my half;
   once every peer has, fold block ``me`` of every half in rank order into ``out``, copy it
   back over block ``me`` of my half (only I read that block of my half this call) and post
   ``red_flag``; then copy every peer's reduced block out of its half. Returns s, 0 when
   nothing was done, -2s once x is posted but a peer is late or passed another count, and
   -(2s + 1) once my block is posted reduced but a peer's is late. */
static long long run_two_shot(SmallPlan *p, const char *x, char *out, uint64_t serial) {
    uint64_t s = serial + 1;
    int h = (int)(s & 1), len_slot = p->len_slot + h;
    if (!begun(p, s)) return 0;
    char **half = p->area + (size_t)h * p->w.ranks;
    copy_bytes(half[p->w.me], x, (size_t)p->nbytes);
    set_word(&p->w, len_slot, p->len_word);
    post(&p->w, p->flag, s);
    for (int q = 0; q < p->w.ranks; q++)
        if (q != p->w.me && !arrived(p, q, s, len_slot)) return -2 * (long long)s;
    size_t offset, length;
    block_of(p, p->w.me, &offset, &length);
    fold_halves(p, half, x, out + offset, offset, (Py_ssize_t)length);
    copy_bytes(half[p->w.me] + offset, out + offset, length);
    post(&p->w, p->red_flag, s);
    for (int q = 0; q < p->w.ranks; q++) {
        if (q == p->w.me) continue;
        if (!reach(&p->w, q, p->red_flag, s)) return -2 * (long long)s - 1;
        block_of(p, q, &offset, &length);
        copy_bytes(out + offset, half[q] + offset, length);
    }
    return (long long)s;
}

/* The one-way calls through the slots (engines/slots.py): call b uses slot b % areas, flag
   ``flag`` and byte-count word len_slot + b % len_ring. A writer copies into its own slot once
   every peer has posted b - areas (none may still read it); a reader waits for the writer's
   post and count. Each returns b, or 0 when nothing was done. */
static int slot_free(SmallPlan *p, uint64_t b) {
    uint64_t free_from = b > (uint64_t)p->areas ? b - (uint64_t)p->areas : 0;
    for (int q = 0; q < p->w.ranks; q++)
        if (q != p->w.me && !reach(&p->w, q, p->flag, free_from)) return 0;
    return 1;
}

static char **slots_of(SmallPlan *p, uint64_t b) { return p->area + (size_t)(b % (uint64_t)p->areas) * p->w.ranks; }

static int len_slot_of(SmallPlan *p, uint64_t b) { return p->len_slot + (int)(b % (uint64_t)p->len_ring); }

/* Writers of call b: copy ``x`` into my slot and set its count. */
static int write_slot(SmallPlan *p, const char *x, uint64_t b) {
    if (!slot_free(p, b)) return 0;
    copy_bytes(slots_of(p, b)[p->w.me], x, (size_t)p->nbytes);
    set_word(&p->w, len_slot_of(p, b), p->len_word);
    return 1;
}

/* Readers of call b: whether rank q has written it, with my count. */
static int written(SmallPlan *p, int q, uint64_t b) { return arrived(p, q, b, len_slot_of(p, b)); }

/* The root of a reduce or gather: whether every peer has written call b with my count. */
static int all_written(SmallPlan *p, uint64_t b) {
    for (int q = 0; q < p->w.ranks; q++)
        if (q != p->w.me && !written(p, q, b)) return 0;
    return 1;
}

/* Broadcast: the root writes ``x``; every other rank copies the root's slot into its ``x``. */
static long long run_broadcast(SmallPlan *p, char *x, int root, uint64_t serial) {
    uint64_t b = serial + 1;
    if (p->w.me == root) {
        if (!write_slot(p, x, b)) return 0;
    } else {
        if (!written(p, root, b)) return 0;
        copy_bytes(x, slots_of(p, b)[root], (size_t)p->nbytes); /* 4K-aliased from 192 KiB: as copy_array */
    }
    post(&p->w, p->flag, b);
    return (long long)b;
}

/* Reduce: every rank but the root writes ``x``; the root folds every rank's contribution in
   rank order into ``x``. */
static long long run_reduce(SmallPlan *p, char *x, int root, uint64_t serial) {
    uint64_t b = serial + 1;
    if (p->w.me != root) {
        if (!write_slot(p, x, b)) return 0;
    } else {
        int64_t writers_yield_ns = p->w.yield_ns;
        p->w.yield_ns = p->root_yield_ns;
        int ready = all_written(p, b);
        p->w.yield_ns = writers_yield_ns;
        if (!ready) return 0;
        char **slot = slots_of(p, b);
        if (p->w.me != 0) { /* x is rank me's operand: fold from rank 0's, in order */
            copy_bytes(slot[p->w.me], x, (size_t)p->nbytes);
            copy_bytes(x, slot[0], (size_t)p->nbytes);
        }
        for (int q = 1; q < p->w.ranks; q++) fold(p->dtype, p->op, x, slot[q], p->nbytes);
    }
    post(&p->w, p->flag, b);
    return (long long)b;
}

/* Gather: every rank but the root writes ``x``; the root copies its ``x`` (first: it may lie
   in ``out``) and every peer's slot into block q of ``out``. */
static long long run_gather(SmallPlan *p, const char *x, char *out, int root, uint64_t serial) {
    uint64_t b = serial + 1;
    size_t n = (size_t)p->nbytes;
    if (p->w.me != root) {
        if (!write_slot(p, x, b)) return 0;
    } else {
        if (!all_written(p, b)) return 0;
        char **slot = slots_of(p, b);
        if (out + (size_t)p->w.me * n != x) memmove(out + (size_t)p->w.me * n, x, n);
        for (int q = 0; q < p->w.ranks; q++)
            if (q != p->w.me) memcpy(out + (size_t)q * n, slot[q], n);
    }
    post(&p->w, p->flag, b);
    return (long long)b;
}

/* Scatter: the root writes every block of ``x`` but its own into its slot and posts, then
   copies its own block into ``out`` (nothing in place), so that the others start copying theirs
   while it does; every other rank copies its block of the root's slot into ``out``. */
static long long run_scatter(SmallPlan *p, const char *x, char *out, int root, uint64_t serial) {
    uint64_t b = serial + 1;
    size_t piece = (size_t)p->nbytes / (size_t)p->w.ranks, mine = (size_t)p->w.me * piece;
    if (p->w.me == root) {
        if (!slot_free(p, b)) return 0;
        char *slot = slots_of(p, b)[p->w.me];
        memcpy(slot, x, mine);
        memcpy(slot + mine + piece, x + mine + piece, (size_t)p->nbytes - mine - piece);
        set_word(&p->w, len_slot_of(p, b), p->len_word);
        post(&p->w, p->flag, b);
        if (out != x + mine) memmove(out, x + mine, piece);
        return (long long)b;
    }
    if (!written(p, root, b)) return 0;
    memcpy(out, slots_of(p, b)[root] + mine, piece);
    post(&p->w, p->flag, b);
    return (long long)b;
}

/* (x, out, root, serial) for a gather or scatter: None for the buffer this rank has not got
   (a gather's out off the root, a scatter's x off the root). */
static PyObject *exchange_call(SmallPlan *p, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4) return PyErr_Format(PyExc_TypeError, "a gather or scatter plan takes (x, out, root, serial)");
    long root = PyLong_AsLong(args[2]);
    if (PyErr_Occurred()) return NULL;
    unsigned long long serial = PyLong_AsUnsignedLongLong(args[3]);
    if (PyErr_Occurred()) return NULL;
    if (root < 0 || root >= p->w.ranks) return PyErr_Format(PyExc_ValueError, "root index %ld out of range", root);
    int gather = p->kind == KIND_GATHER, at_root = root == p->w.me;
    /* what this rank must have: a gather's x, and out on the root; a scatter's out, and x on the root */
    int want_x = gather || at_root, want_out = !gather || at_root;
    Py_ssize_t out_len = gather ? p->nbytes * p->w.ranks : p->nbytes / p->w.ranks; /* x: a slot's nbytes */
    Py_buffer xb = {0}, ob = {0};
    long long result = 0;
    if (want_x && PyObject_GetBuffer(args[0], &xb, PyBUF_SIMPLE) < 0) {
        PyErr_Clear(); /* the Python plan takes it (and says what is wrong) */
        return PyLong_FromLong(0);
    }
    if (want_out && PyObject_GetBuffer(args[1], &ob, PyBUF_WRITABLE) < 0) {
        PyErr_Clear();
        if (want_x) PyBuffer_Release(&xb);
        return PyLong_FromLong(0);
    }
    if ((!want_x || xb.len == p->nbytes) && (!want_out || ob.len == out_len))
        result = gather ? run_gather(p, (const char *)xb.buf, (char *)ob.buf, (int)root, serial)
                        : run_scatter(p, (const char *)xb.buf, (char *)ob.buf, (int)root, serial);
    if (want_out) PyBuffer_Release(&ob);
    if (want_x) PyBuffer_Release(&xb);
    return PyLong_FromLongLong(result);
}

/* A broadcast's or reduce's call serial + 1 on ``x`` (root: a window index in range): its serial, or 0
   where nothing was done (the Python plan takes it, and says what is wrong with ``x``). */
static long long one_way(SmallPlan *p, PyObject *x, int root, uint64_t serial) {
    Py_buffer xb;
    int writes = (root == p->w.me) == (p->kind == KIND_REDUCE); /* the rank that receives */
    if (PyObject_GetBuffer(x, &xb, writes ? PyBUF_WRITABLE : PyBUF_SIMPLE) < 0) {
        PyErr_Clear();
        return 0;
    }
    long long result = 0;
    if (xb.len == p->nbytes)
        result = p->kind == KIND_REDUCE ? run_reduce(p, (char *)xb.buf, root, serial) : run_broadcast(p, (char *)xb.buf, root, serial);
    PyBuffer_Release(&xb);
    return result;
}

static PyObject *SmallPlan_call(SmallPlan *p, PyObject *const *args, Py_ssize_t nargs) {
    /* (x, out, serial) for the halves; (x, root, serial) for a broadcast or reduce; (serial,) for a barrier */
    Py_buffer xb = {0}, ob = {0};
    long long result = 0;
    if (p->kind == KIND_BARRIER) {
        if (nargs != 1) return PyErr_Format(PyExc_TypeError, "a barrier plan takes (serial)");
        unsigned long long serial = PyLong_AsUnsignedLongLong(args[0]);
        if (PyErr_Occurred()) return NULL;
        return PyLong_FromLongLong(run_halves(p, NULL, NULL, serial));
    }
    if (p->kind == KIND_GATHER || p->kind == KIND_SCATTER) return exchange_call(p, args, nargs);
    if (nargs != 3) return PyErr_Format(PyExc_TypeError, "a small plan takes three arguments");
    unsigned long long serial = PyLong_AsUnsignedLongLong(args[2]);
    if (PyErr_Occurred()) return NULL;
    if (p->kind == KIND_BROADCAST || p->kind == KIND_REDUCE) {
        long root = PyLong_AsLong(args[1]);
        if (PyErr_Occurred()) return NULL;
        if (root < 0 || root >= p->w.ranks) return PyErr_Format(PyExc_ValueError, "root index %ld out of range", root);
        return PyLong_FromLongLong(one_way(p, args[0], (int)root, serial));
    }
    if (PyObject_GetBuffer(args[0], &xb, PyBUF_SIMPLE) < 0) {
        PyErr_Clear(); /* the Python plan takes it (and says what is wrong) */
        return PyLong_FromLong(0);
    }
    if (PyObject_GetBuffer(args[1], &ob, PyBUF_WRITABLE) < 0) {
        PyErr_Clear();
        PyBuffer_Release(&xb);
        return PyLong_FromLong(0);
    }
    Py_ssize_t want_out = p->kind == KIND_ALL_GATHER ? p->nbytes * p->w.ranks : p->red_bytes;
    if (xb.len == p->nbytes && ob.len == want_out) /* else the Python plan does it (and says what is wrong) */
        result = p->kind == KIND_ALL_REDUCE_TWO_SHOT ? run_two_shot(p, (const char *)xb.buf, (char *)ob.buf, serial)
                                                     : run_halves(p, (const char *)xb.buf, (char *)ob.buf, serial);
    PyBuffer_Release(&ob);
    PyBuffer_Release(&xb);
    return PyLong_FromLongLong(result);
}

static PyObject *SmallPlan_vectorcall(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames);

static void SmallPlan_dealloc(SmallPlan *p) {
    PyMem_Free(p->w.flags);
    PyMem_Free(p->area);
    PyMem_Free(p->w.doorbell);
    PyMem_Free(p->w.sleeping);
    Py_XDECREF(p->keep);
    Py_TYPE(p)->tp_free((PyObject *)p);
}

static PyObject *SmallPlan_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    static char *names[] = {"kind", "me", "flags", "areas", "doorbells", "sleepers", "flag", "len_slot", "nbytes",
                            "len_word", "dtype", "op", "red_offset", "red_bytes", "spin_ns", "yield_ns", "keep",
                            "cpu_slot", "len_ring", "exit_slot", "red_flag", "root_yield_ns", NULL};
    int kind, me, flag, len_slot, dtype, op, cpu_slot = -1, len_ring = 0, exit_slot = -1, red_flag = -1;
    Py_ssize_t nbytes, red_offset, red_bytes;
    unsigned long long len_word;
    long long spin_ns, yield_ns, root_yield_ns = -1;
    PyObject *flags, *areas, *doorbells, *sleepers, *keep;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "iiOOOOiinKiinnLLO|iiiiL", names, &kind, &me, &flags, &areas, &doorbells,
                                     &sleepers, &flag, &len_slot, &nbytes, &len_word, &dtype, &op, &red_offset,
                                     &red_bytes, &spin_ns, &yield_ns, &keep, &cpu_slot, &len_ring, &exit_slot,
                                     &red_flag, &root_yield_ns))
        return NULL;
    Py_ssize_t ranks = PySequence_Length(flags), nareas = PySequence_Length(areas), bells = PySequence_Length(doorbells);
    if (ranks < 1 || nareas < 0 || bells < 0) return NULL;
    if (kind < KIND_ALL_REDUCE || kind > KIND_ALL_REDUCE_TWO_SHOT ||
        (kind == KIND_ALL_REDUCE_TWO_SHOT && (red_flag < 0 || op == OP_NONE)) ||
        ((kind == KIND_SCATTER || kind == KIND_ALL_TO_ALL) && nbytes % ranks != 0) || me < 0 || me >= ranks || nbytes < 0 || red_offset < 0 ||
        red_bytes < 0 || red_offset + red_bytes > nbytes || spin_ns < 0 || yield_ns < 0 || nareas % ranks != 0 ||
        (kind != KIND_BARRIER && nareas == 0) || len_ring < 0 || (len_ring > 0 && len_ring < nareas / ranks))
        return PyErr_Format(PyExc_ValueError, "inconsistent small plan");
    if ((op != OP_NONE || kind == KIND_REDUCE || kind == KIND_ALL_REDUCE_TWO_SHOT) && !folds(dtype, op))
        return PyErr_Format(PyExc_ValueError, "no C fold for dtype code %d and operator code %d", dtype, op);
    SmallPlan *p = (SmallPlan *)type->tp_alloc(type, 0);
    if (p == NULL) return NULL;
    p->kind = kind, p->w.ranks = (int)ranks, p->w.me = me, p->flag = flag, p->len_slot = len_slot;
    p->areas = (int)(nareas / ranks), p->op = op, p->dtype = dtype, p->nbytes = nbytes, p->len_word = len_word;
    p->red_offset = red_offset, p->red_bytes = red_bytes, p->w.spin_ns = spin_ns, p->w.yield_ns = yield_ns;
    p->vectorcall = SmallPlan_vectorcall;
    p->w.bells = (int)bells, p->w.cpu_slot = cpu_slot, p->exit_slot = exit_slot, p->red_flag = red_flag, p->w.moves = 0;
    p->len_ring = len_ring > 0 ? len_ring : (int)(nareas / ranks);
    p->root_yield_ns = root_yield_ns >= 0 ? root_yield_ns : yield_ns;
    p->w.every_poll = spin_ns == 0 && yield_ns > 0 && nbytes < CROWDED_POLL_BYTES, p->w.crowded_waits = 0;
    p->w.flags = PyMem_Calloc((size_t)ranks, sizeof(void *));
    p->area = PyMem_Calloc((size_t)nareas + 1, sizeof(void *));
    p->w.doorbell = PyMem_Calloc((size_t)bells + 1, sizeof(void *));
    p->w.sleeping = PyMem_Calloc((size_t)bells + 1, sizeof(void *));
    Py_INCREF(keep);
    p->keep = keep;
    if (!p->w.flags || !p->area || !p->w.doorbell || !p->w.sleeping) {
        Py_DECREF(p);
        return PyErr_NoMemory();
    }
    if (addresses(flags, ranks, p->w.flags, "flags") < 0 || addresses(areas, nareas, p->area, "areas") < 0 ||
        addresses(doorbells, bells, p->w.doorbell, "doorbells") < 0 ||
        addresses(sleepers, bells, p->w.sleeping, "sleepers") < 0) {
        Py_DECREF(p);
        return NULL;
    }
    return (PyObject *)p;
}

static PyObject *SmallPlan_vectorcall(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    if (kwnames != NULL && PyTuple_GET_SIZE(kwnames)) return PyErr_Format(PyExc_TypeError, "no keyword arguments");
    return SmallPlan_call((SmallPlan *)self, args, PyVectorcall_NARGS(nargsf));
}

/* The counters, read-only ints read straight from the flag set (one table, as the lane's). */
static PyMemberDef SmallPlan_members[] = {
    {"moves", T_LONGLONG, offsetof(SmallPlan, w.moves), READONLY, "How often this rank moved itself to another CPU."},
    {"crowded_waits", T_LONGLONG, offsetof(SmallPlan, w.crowded_waits), READONLY,
     "Waits that yielded at every poll (ranks outnumbering CPUs, a call below CROWDED_POLL_BYTES)."},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject SmallPlanType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "collectives.engines._small_c.SmallPlan",
    .tp_basicsize = sizeof(SmallPlan),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_vectorcall_offset = offsetof(SmallPlan, vectorcall),
    .tp_new = SmallPlan_new,
    .tp_call = PyVectorcall_Call,
    .tp_dealloc = (destructor)SmallPlan_dealloc,
    .tp_members = SmallPlan_members,
    .tp_doc = "One shape of small-window collective, run in C up to the first late peer.",
};

/* -- a one-way call's plan (plans/windowed.py's OneWay) ------------------------------ */

/* The base type of ``OneWay``: called as plan(x, out, call), it runs the call in C once ``arm``
   gave it the shape's C plan (a broadcast or reduce), and otherwise, or where C did nothing (a
   slot still being read, a writer late, another count), calls the Python plan's
   ``run(x, out, call)``. A repeated one-way call then costs no Python frame of its own. */
typedef struct {
    PyObject_HEAD
    PyObject *plan;    /* the SmallPlan, once armed (NULL: every call runs in Python) */
    PyObject *windows; /* what counts the one-way calls: its ``broadcast_serial`` */
    int root;          /* the root's index in the window */
    long long done;    /* calls done here in C */
} OneWayCall;

static PyObject *s_serial, *s_run;

static int OneWayCall_traverse(OneWayCall *c, visitproc visit, void *arg) {
    Py_VISIT(c->plan);
    Py_VISIT(c->windows);
    return 0;
}

static int OneWayCall_clear(OneWayCall *c) {
    Py_CLEAR(c->plan);
    Py_CLEAR(c->windows);
    return 0;
}

static void OneWayCall_dealloc(OneWayCall *c) {
    PyObject_GC_UnTrack(c);
    OneWayCall_clear(c);
    Py_TYPE(c)->tp_free((PyObject *)c);
}

static PyObject *OneWayCall_call(OneWayCall *c, PyObject *args, PyObject *kwargs) {
    if (c->plan != NULL && kwargs == NULL && PyTuple_GET_SIZE(args) == 3) {
        PyObject *s = PyObject_GetAttr(c->windows, s_serial);
        if (s == NULL) return NULL;
        unsigned long long serial = PyLong_AsUnsignedLongLong(s);
        Py_DECREF(s);
        if (PyErr_Occurred()) return NULL;
        long long b = one_way((SmallPlan *)c->plan, PyTuple_GET_ITEM(args, 0), c->root, serial);
        if (b > 0) {
            PyObject *v = PyLong_FromLongLong(b);
            int stored = v == NULL ? -1 : PyObject_SetAttr(c->windows, s_serial, v);
            Py_XDECREF(v);
            if (stored < 0) return NULL;
            c->done++;
            Py_RETURN_NONE;
        }
    }
    PyObject *run = PyObject_GetAttr((PyObject *)c, s_run);
    if (run == NULL) return NULL;
    PyObject *result = PyObject_Call(run, args, kwargs);
    Py_DECREF(run);
    return result;
}

/* arm(plan, windows, root_index): run the calls in C from now on, through ``plan``. */
static PyObject *OneWayCall_arm(OneWayCall *c, PyObject *args) {
    PyObject *plan, *windows;
    int root;
    if (!PyArg_ParseTuple(args, "O!Oi", &SmallPlanType, &plan, &windows, &root)) return NULL;
    SmallPlan *p = (SmallPlan *)plan;
    if (p->kind != KIND_BROADCAST && p->kind != KIND_REDUCE)
        return PyErr_Format(PyExc_ValueError, "a one-way call runs a broadcast or reduce plan, not kind %d", p->kind);
    if (root < 0 || root >= p->w.ranks) return PyErr_Format(PyExc_ValueError, "root index %d out of range", root);
    Py_INCREF(plan);
    Py_INCREF(windows);
    Py_XSETREF(c->plan, plan);
    Py_XSETREF(c->windows, windows);
    c->root = root;
    Py_RETURN_NONE;
}

static PyMethodDef OneWayCall_methods[] = {
    {"arm", (PyCFunction)OneWayCall_arm, METH_VARARGS, "arm(plan, windows, root_index): run the calls in C from now on."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef OneWayCall_members[] = {
    {"done", T_LONGLONG, offsetof(OneWayCall, done), READONLY, "Calls done in C (not by run)."},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject OneWayCallType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "collectives.engines._small_c.OneWayCall",
    .tp_basicsize = sizeof(OneWayCall),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_call = (ternaryfunc)OneWayCall_call,
    .tp_traverse = (traverseproc)OneWayCall_traverse,
    .tp_clear = (inquiry)OneWayCall_clear,
    .tp_dealloc = (destructor)OneWayCall_dealloc,
    .tp_methods = OneWayCall_methods,
    .tp_members = OneWayCall_members,
    .tp_doc = "The base of a one-way call's plan: its calls in C once armed, else run(x, out, call).",
};

static PyObject *folds_py(PyObject *self, PyObject *args) {
    int dtype, op;
    if (!PyArg_ParseTuple(args, "ii", &dtype, &op)) return NULL;
    return PyBool_FromLong(folds(dtype, op));
}

/* apart(a, b): whether two buffers are the same memory or do not overlap (None where either
   does not export a contiguous buffer); numpy's may_share_memory costs three times as much. */
static PyObject *apart_py(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) return PyErr_Format(PyExc_TypeError, "apart(a, b) takes two buffers");
    Py_buffer a, b;
    if (PyObject_GetBuffer(args[0], &a, PyBUF_SIMPLE) < 0) {
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    if (PyObject_GetBuffer(args[1], &b, PyBUF_SIMPLE) < 0) {
        PyErr_Clear();
        PyBuffer_Release(&a);
        Py_RETURN_NONE;
    }
    const char *x = a.buf, *y = b.buf;
    int ok = x == y || x + a.len <= y || y + b.len <= x;
    PyBuffer_Release(&b);
    PyBuffer_Release(&a);
    return PyBool_FromLong(ok);
}

/* crowded_move(me, posted, here, allowed): _flags.h's crowded_move on lists (``posted``: each
   rank's last posted CPU + 1, 0 for none; ``allowed``: CPU numbers), for the tests. */
static PyObject *crowded_move_py(PyObject *self, PyObject *args) {
    (void)self;
    int me, here;
    PyObject *posted, *allowed;
    if (!PyArg_ParseTuple(args, "iO!iO!", &me, &PyList_Type, &posted, &here, &PyList_Type, &allowed)) return NULL;
#ifdef __linux__
    Py_ssize_t ranks = PyList_GET_SIZE(posted);
    if (ranks < 1 || ranks > BALANCE_MAX_RANKS || me < 0 || me >= ranks)
        return PyErr_Format(PyExc_ValueError, "crowded_move: %zd ranks (1 to %d), me %d", ranks, BALANCE_MAX_RANKS, me);
    uint64_t cpus[BALANCE_MAX_RANKS];
    cpu_set_t set;
    CPU_ZERO(&set);
    for (Py_ssize_t q = 0; q < ranks; q++) {
        cpus[q] = PyLong_AsUnsignedLongLong(PyList_GET_ITEM(posted, q));
        if (PyErr_Occurred()) return NULL;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(allowed); i++) {
        long cpu = PyLong_AsLong(PyList_GET_ITEM(allowed, i));
        if (PyErr_Occurred()) return NULL;
        if (cpu < 0 || cpu >= CPU_SETSIZE) return PyErr_Format(PyExc_ValueError, "crowded_move: no CPU %ld", cpu);
        CPU_SET((int)cpu, &set);
    }
    return PyLong_FromLong(crowded_move((int)ranks, me, cpus, here, &set));
#else
    (void)me, (void)here, (void)posted, (void)allowed;
    return PyLong_FromLong(-1); /* no per-thread CPU masks to move with */
#endif
}

static PyMethodDef methods[] = {
    {"folds", folds_py, METH_VARARGS, "Whether the C plans fold (dtype code, operator code) themselves."},
    {"crowded_move", crowded_move_py, METH_VARARGS, "Where a crowded rank moves itself (-1: it stays); for the tests."},
    {"apart", (PyCFunction)(void (*)(void))apart_py, METH_FASTCALL, "Whether two buffers are the same or apart."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_small_c", "Small-window collectives in C.", -1, methods};

PyMODINIT_FUNC PyInit__small_c(void) {
    if (PyType_Ready(&SmallPlanType) < 0 || PyType_Ready(&OneWayCallType) < 0) return NULL;
    if ((s_serial = PyUnicode_InternFromString("broadcast_serial")) == NULL ||
        (s_run = PyUnicode_InternFromString("run")) == NULL)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    if (PyModule_AddType(m, &SmallPlanType) < 0 || PyModule_AddType(m, &OneWayCallType) < 0 ||
        PyModule_AddIntConstant(m, "CROWDED_POLL_BYTES", (long)CROWDED_POLL_BYTES) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
