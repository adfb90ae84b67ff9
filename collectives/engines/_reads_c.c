/* The happy path of large all-to-alls, all-gathers, gathers and scatters by reads and writes
   of peers' memory (engines/exchange_reads.py) in one C call; below, that of the reduces and
   reduce-scatters by reads (engines/direct.py), ``FoldPlan``.

   Such a call is a few flag words, one copy of my own block and a process_vm_readv or
   process_vm_writev per peer: in Python the posts, waits, views and ctypes calls around them
   cost as much as the copies of a 256 KiB call (docs/performance.md, "Fifteenth round"). Here
   a call does them all, spinning at most ``spin_ns`` (then ``yield_ns`` of sched_yield) on a
   late peer. It never sleeps and never reports an error: where a peer is late, a byte count
   differs or the kernel refuses a copy, it returns how far it got, and the Python plan finishes
   the call from there with its own waits (futex sleep, liveness and timeout checks) and
   errors. Same flags, same copies, same shares as the Python plan (an all-gather by writes
   here takes its own block piece by piece between the writes). */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/types.h>

#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "_copy.h"
#include "_cma.h"
#include "_flags.h"
#include "_fold.h"
#include "_sequences.h" /* the constructor's addresses and numbers */

enum { KIND_ALL_TO_ALL = 0, KIND_GATHER = 1, KIND_SCATTER = 2, KIND_ALL_GATHER = 3 }; /* exchange_reads.KINDS */
enum { S_POSTED, S_READ, S_ADDR, S_RESULT, S_LEN, S_SHARE, SLOTS }; /* indices into ``slot`` */

/* A plan's flag set from its constructor's arguments (ReadsPlan, FoldPlan): the window's flag areas,
   doorbells and sleepers' words, my index and CPU slot, the waits' spin and yield; -1 with an error
   set (the arrays taken so far are freed with the plan, ``free_flag_set``). */
static int take_flag_set(FlagSet *w, PyObject *flags, PyObject *doorbells, PyObject *sleepers, Py_ssize_t ranks,
                         Py_ssize_t bells, int me, int cpu_slot, long long spin_ns, long long yield_ns) {
    w->ranks = (int)ranks, w->me = me, w->cpu_slot = cpu_slot, w->bells = (int)bells, w->moves = 0;
    w->spin_ns = spin_ns, w->yield_ns = yield_ns;
    w->every_poll = 0, w->crowded_waits = 0; /* a yield every 64th poll, crowded or not */
    w->flags = PyMem_Calloc((size_t)ranks, sizeof(void *));
    w->doorbell = PyMem_Calloc((size_t)bells + 1, sizeof(void *));
    w->sleeping = PyMem_Calloc((size_t)bells + 1, sizeof(void *));
    if (!w->flags || !w->doorbell || !w->sleeping) {
        PyErr_NoMemory();
        return -1;
    }
    int bad = integers(flags, ranks, 1, w->flags, "flags") < 0 ||
              integers(doorbells, bells, 1, w->doorbell, "doorbells") < 0 ||
              integers(sleepers, bells, 1, w->sleeping, "sleepers") < 0;
    return bad ? -1 : 0;
}

static void free_flag_set(FlagSet *w) {
    PyMem_Free(w->flags);
    PyMem_Free(w->doorbell);
    PyMem_Free(w->sleeping);
}

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall; /* how Python calls it: ReadsPlan_vectorcall */
    FlagSet w;
    int kind, root, npartners;
    int copy_first;            /* an all-gather that copies my block into ``out`` before posting it */
    int stream;                /* an all-gather that copies my block with non-temporal stores */
    Py_ssize_t write_piece;    /* an all-gather that writes my block into peers' ``out`` in pieces of this size */
    int slot[SLOTS];
    int *partners;             /* [npartners]: window indices, in the order the Python plan takes them */
    pid_t *pids;               /* [ranks]: each window rank's process */
    Py_ssize_t expected, block, share_own, share_in_place;
    unsigned long long staged; /* an all-to-all in place: bit q set where this call read peer q's block
                                  into ``inbox``, to copy into ``out`` after q's READ (q not in place) */
    PyObject *keep;            /* what keeps the flag mappings alive */
} ReadsPlan;

#define SWAPS 1 /* an all-to-all's SHARE word: exactly in place, so pairs of such ranks swap blocks */
#define SWAP_PIECE ((size_t)64 << 10) /* bytes a swap reads, writes and copies back at a time */
#define MAX_SWAP_RANKS 64 /* ``staged``'s bits */

/* ``dst = src`` with non-temporal stores (where the compiler has SSE2, else memcpy): the copy's
   lines go to memory without being read first and without evicting what the reads that follow
   need. */
static void stream_bytes(char *dst, const char *src, size_t n) {
#ifdef __SSE2__
    size_t head = (size_t)(-(uintptr_t)dst) & 63;
    if (head > n) head = n;
    memcpy(dst, src, head);
    dst += head, src += head, n -= head;
    size_t whole = n - n % 64;
    for (size_t i = 0; i < whole; i += 64) {
        __m128i a = _mm_loadu_si128((const __m128i *)(src + i)), b = _mm_loadu_si128((const __m128i *)(src + i + 16)),
                c = _mm_loadu_si128((const __m128i *)(src + i + 32)), d = _mm_loadu_si128((const __m128i *)(src + i + 48));
        _mm_stream_si128((__m128i *)(dst + i), a);
        _mm_stream_si128((__m128i *)(dst + i + 16), b);
        _mm_stream_si128((__m128i *)(dst + i + 32), c);
        _mm_stream_si128((__m128i *)(dst + i + 48), d);
    }
    _mm_sfence();
    memcpy(dst + whole, src + whole, n - whole);
#else
    memcpy(dst, src, n);
#endif
}

/* Copy ``n`` bytes between my ``local`` and ``remote`` in window rank q's process: 1 done, 0
   refused (the Python plan copies again and says why). */
static int transfer(ReadsPlan *p, int q, int write, char *local, uint64_t remote, size_t n) {
    return cma_copy(p->pids[q], write, local, remote, n);
}

/* My part of the exchange with window rank q (exchange_reads.ExchangeByReads._copy). */
static int copy_with(ReadsPlan *p, int q, const char *src, char *out, size_t share) {
    size_t block = (size_t)p->block;
    uint64_t theirs = load_flag(&p->w, q, p->slot[S_ADDR]);
    switch (p->kind) {
    case KIND_ALL_TO_ALL:
        return transfer(p, q, 0, out + (size_t)q * block, theirs + (uint64_t)p->w.me * block, block);
    case KIND_ALL_GATHER:
        return transfer(p, q, 0, out + (size_t)q * block, theirs, block);
    case KIND_GATHER:
        if (q != p->root) return share == 0 || transfer(p, q, 0, out + (size_t)q * block, theirs, share);
        {
            size_t head = (size_t)load_flag(&p->w, q, p->slot[S_SHARE]);
            uint64_t result = load_flag(&p->w, q, p->slot[S_RESULT]);
            return head >= block || transfer(p, q, 1, (char *)src + head, result + (uint64_t)p->w.me * block + head,
                                             block - head);
        }
    default: /* scatter */
        if (q == p->root) {
            size_t given = (size_t)load_flag(&p->w, q, p->slot[S_SHARE]);
            size_t head = given < block ? block - given : 0;
            return head == 0 || transfer(p, q, 0, out, theirs + (uint64_t)p->w.me * block, head);
        }
        if (share == 0) return 1;
        {
            size_t head = block - share;
            uint64_t result = load_flag(&p->w, q, p->slot[S_RESULT]);
            return transfer(p, q, 1, (char *)src + (size_t)q * block + head, result + head, share);
        }
    }
}

/* The part of the pair of blocks (my block q, q's block me) that I swap with window rank q in an
   all-to-all where both of us are in place (exchange_reads.swap_part): partner i
   is (me + 1 + i) mod p; nearer than half the ranks ahead of me, all of it; exactly half, the
   first half where me < q, the rest where not; farther, none (q swaps it). */
static void swap_part(ReadsPlan *p, int i, int q, size_t *at, size_t *n) {
    size_t block = (size_t)p->block, half = (block / 2) & ~(size_t)63;
    int d = i + 1, ranks = p->w.ranks;
    *at = 0, *n = 0;
    if (2 * d < ranks) *n = block;
    else if (2 * d == ranks) {
        if (p->w.me < q) *n = half;
        else *at = half, *n = block - half;
    }
}

/* Swap bytes [at, at + n) of my block q (in ``x``, which is ``out``) with those of q's block me:
   a piece of q's into ``temp``, a piece of mine into q's, ``temp`` into mine. 1 done, 0 refused. */
static int swap_with(ReadsPlan *p, int q, char *x, char *temp, size_t at, size_t n) {
    size_t block = (size_t)p->block;
    uint64_t theirs = load_flag(&p->w, q, p->slot[S_ADDR]) + (uint64_t)p->w.me * block + at;
    uint64_t result = load_flag(&p->w, q, p->slot[S_RESULT]) + (uint64_t)p->w.me * block + at;
    char *mine = x + (size_t)q * block + at;
    for (size_t done = 0; done < n; done += SWAP_PIECE) {
        size_t m = n - done < SWAP_PIECE ? n - done : SWAP_PIECE;
        if (!transfer(p, q, 0, temp, theirs + done, m) || !transfer(p, q, 1, mine + done, result + done, m)) return 0;
        copy_bytes(mine + done, temp, m);
    }
    return 1;
}

/* An all-gather by writes: piece by piece, my block into every peer's ``out`` (the partners in
   order), then into mine, so that the piece I write twice is read from my cache the second time
   (exchange_reads.ExchangeByReads._copy writes the same bytes). 1 done; 0 where a peer is late, a
   byte count differs or the kernel refuses a write, with my own block copied all the same (the
   Python plan writes to every peer again). */
static int write_all(ReadsPlan *p, const char *mine, char *dst, int copies_own, uint64_t s) {
    size_t block = (size_t)p->block, piece = (size_t)p->write_piece;
    for (int i = 0; i < p->npartners; i++) {
        int q = p->partners[i];
        if (!reach(&p->w, q, p->slot[S_POSTED], s) || load_flag(&p->w, q, p->slot[S_LEN]) != (uint64_t)p->expected)
            goto refused;
    }
    for (size_t at = 0; at < block; at += piece) {
        size_t m = block - at < piece ? block - at : piece;
        for (int i = 0; i < p->npartners; i++) {
            int q = p->partners[i];
            uint64_t theirs = load_flag(&p->w, q, p->slot[S_RESULT]) + (uint64_t)p->w.me * block + at;
            if (!transfer(p, q, 1, (char *)mine + at, theirs, m)) goto refused;
        }
        if (copies_own) copy_bytes(dst + at, mine + at, m);
    }
    return 1;
refused:
    if (copies_own) copy_bytes(dst, mine, block);
    return 0;
}

static int overlap(const char *a, size_t na, const char *b, size_t nb) { return a < b + nb && b < a + na; }

/* Whether my ``x`` is one whole block: an all-gather's or a gather's. */
static int whole_x(int kind) { return kind == KIND_GATHER || kind == KIND_ALL_GATHER; }

/* After my copies: READ, every partner's READ, then (an all-to-all in place) what I read into
   ``out``. s when done, -(npartners + 2) where a partner's READ is still to come. */
static long long finish(ReadsPlan *p, char *out, const char *into, uint64_t s) {
    size_t block = (size_t)p->block;
    post(&p->w, p->slot[S_READ], s);
    for (int i = 0; i < p->npartners; i++)
        if (!reach(&p->w, p->partners[i], p->slot[S_READ], s)) return -(long long)(p->npartners + 2);
    if (into != out)
        for (int i = 0; i < p->npartners; i++) {
            size_t at = (size_t)p->partners[i] * block;
            if (p->staged >> p->partners[i] & 1) copy_bytes(out + at, into + at, block);
        }
    return (long long)s;
}

/* One call: s when done; 0 when nothing was done (the Python plan runs the call); -(1 + i)
   once posted with partners[:i] done; -(npartners + 2) once READ is posted, a partner's READ
   (or, in place, the copy of what I read into ``out``) still to come. An all-to-all exactly in
   place (at most MAX_SWAP_RANKS ranks) posts SWAPS: with a peer that posted it too, one of us swaps
   the pair of blocks (``swap_part``) through ``inbox`` (the plan's kept buffer); from a peer that
   did not, it reads into ``inbox`` and copies into ``out`` once that peer has read it (``staged``);
   other overlaps are the Python plan's (it copies x). */
static long long run(ReadsPlan *p, const char *x, size_t x_len, char *out, size_t out_len, char *inbox,
                     Py_ssize_t inbox_len, uint64_t serial) {
    size_t block = (size_t)p->block, expected = (size_t)p->expected;
    int me = p->w.me;
    char *into = out;
    if (x != NULL && out != NULL && overlap(x, x_len, out, out_len)) {
        if (p->kind == KIND_ALL_TO_ALL && x == out && inbox != NULL && inbox_len == p->expected &&
            p->w.ranks <= MAX_SWAP_RANKS)
            into = inbox;
        else if (!(whole_x(p->kind) && x == out + (size_t)me * block) &&
                 !(p->kind == KIND_SCATTER && out == x + (size_t)me * block))
            return 0;
    }
    const char *mine = x == NULL ? NULL : whole_x(p->kind) ? x : x + (size_t)me * block;
    char *dst = out == NULL ? NULL : p->kind == KIND_SCATTER ? out : out + (size_t)me * block;
    int copies_own = mine != NULL && dst != NULL && dst != mine;
    size_t share = me == p->root && (p->kind == KIND_GATHER || p->kind == KIND_SCATTER)
                       ? (size_t)(copies_own ? p->share_own : p->share_in_place) : 0;
    uint64_t s = serial + 1;
    int swaps = into != out; /* an all-to-all exactly in place */
    p->staged = 0;
    set_word(&p->w, p->slot[S_SHARE], swaps ? SWAPS : share);
    const char *shown = x; /* where peers read my x */
    if (p->copy_first && copies_own && !p->write_piece) {
        copy_bytes(dst, mine, block);
        copies_own = 0;
        shown = dst;
    }
    set_word(&p->w, p->slot[S_ADDR], (uint64_t)(uintptr_t)shown);
    set_word(&p->w, p->slot[S_RESULT], (uint64_t)(uintptr_t)out);
    set_word(&p->w, p->slot[S_LEN], expected);
    post(&p->w, p->slot[S_POSTED], s);
    if (p->write_piece) {
        if (!write_all(p, mine, dst, copies_own, s)) return -1;
        return finish(p, out, into, s);
    }
    if (copies_own) (p->stream ? stream_bytes : copy_bytes)(dst, mine, block);
    for (int i = 0; i < p->npartners; i++) {
        int q = p->partners[i];
        if (!reach(&p->w, q, p->slot[S_POSTED], s) || load_flag(&p->w, q, p->slot[S_LEN]) != expected)
            return -(long long)(1 + i);
        if (swaps && load_flag(&p->w, q, p->slot[S_SHARE]) == SWAPS) {
            size_t at, n;
            swap_part(p, i, q, &at, &n);
            if (n && !swap_with(p, q, out, into + (size_t)q * block, at, n)) return -(long long)(1 + i);
            continue;
        }
        if (into != out) p->staged |= 1ull << q;
        if (!copy_with(p, q, x, into, share)) return -(long long)(1 + i);
    }
    return finish(p, out, into, s);
}

/* A buffer argument: None (NULL, 1), or a contiguous buffer of ``want`` bytes (1), else 0 (the
   Python plan takes the call and says what is wrong). */
static int take(PyObject *arg, int writable, Py_ssize_t want, Py_buffer *view) {
    if (arg == Py_None) return 1;
    if (PyObject_GetBuffer(arg, view, writable ? PyBUF_WRITABLE : PyBUF_SIMPLE) < 0) {
        PyErr_Clear();
        return 0;
    }
    if (want >= 0 && view->len != want) {
        PyBuffer_Release(view);
        view->obj = NULL;
        return 0;
    }
    return 1;
}

/* (x, out, inbox, serial): None for the buffer this rank has not got; ``inbox``: the plan's kept
   buffer for an all-to-all in place, or None. */
static PyObject *ReadsPlan_call(ReadsPlan *p, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4) return PyErr_Format(PyExc_TypeError, "a reads plan takes (x, out, inbox, serial)");
    unsigned long long serial = PyLong_AsUnsignedLongLong(args[3]);
    if (PyErr_Occurred()) return NULL;
    int at_root = p->w.me == p->root;
    Py_ssize_t ranks = p->w.ranks;
    int want_x = p->kind != KIND_SCATTER || at_root, want_out = p->kind != KIND_GATHER || at_root;
    Py_ssize_t x_len = whole_x(p->kind) ? p->block : p->expected;
    Py_ssize_t out_len = whole_x(p->kind) ? p->block * ranks : p->kind == KIND_SCATTER ? p->block : p->expected;
    Py_buffer xb = {0}, ob = {0}, ab = {0};
    long long result = 0;
    if ((args[0] == Py_None) != !want_x || (args[1] == Py_None) != !want_out) return PyLong_FromLong(0);
    if (take(args[0], 0, x_len, &xb) && take(args[1], 1, out_len, &ob) && take(args[2], 1, -1, &ab))
        result = run(p, xb.obj ? xb.buf : NULL, (size_t)x_len, ob.obj ? ob.buf : NULL, (size_t)out_len,
                     ab.obj ? ab.buf : NULL, ab.obj ? ab.len : 0, serial);
    if (ab.obj) PyBuffer_Release(&ab);
    if (ob.obj) PyBuffer_Release(&ob);
    if (xb.obj) PyBuffer_Release(&xb);
    return PyLong_FromLongLong(result);
}

static PyObject *ReadsPlan_vectorcall(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    if (kwnames != NULL && PyTuple_GET_SIZE(kwnames)) return PyErr_Format(PyExc_TypeError, "no keyword arguments");
    return ReadsPlan_call((ReadsPlan *)self, args, PyVectorcall_NARGS(nargsf));
}

static void ReadsPlan_dealloc(ReadsPlan *p) {
    free_flag_set(&p->w);
    PyMem_Free(p->partners);
    PyMem_Free(p->pids);
    Py_XDECREF(p->keep);
    Py_TYPE(p)->tp_free((PyObject *)p);
}

static PyObject *ReadsPlan_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    static char *names[] = {"kind", "me", "root", "flags", "doorbells", "sleepers", "pids", "partners", "slots",
                            "expected", "block", "share_own", "share_in_place", "spin_ns", "yield_ns", "cpu_slot",
                            "copy_first", "stream", "write_piece", "keep", NULL};
    int kind, me, root, cpu_slot, copy_first, stream;
    Py_ssize_t expected, block, share_own, share_in_place, write_piece;
    long long spin_ns, yield_ns;
    PyObject *flags, *doorbells, *sleepers, *pids, *partners, *slots, *keep;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "iiiOOOOOOnnnnLLippnO", names, &kind, &me, &root, &flags, &doorbells,
                                     &sleepers, &pids, &partners, &slots, &expected, &block, &share_own,
                                     &share_in_place, &spin_ns, &yield_ns, &cpu_slot, &copy_first, &stream, &write_piece, &keep))
        return NULL;
    Py_ssize_t ranks = PySequence_Length(flags), bells = PySequence_Length(doorbells),
               npartners = PySequence_Length(partners);
    if (ranks < 1 || bells < 0 || npartners < 0) return NULL;
    if (kind < KIND_ALL_TO_ALL || kind > KIND_ALL_GATHER || me < 0 || me >= ranks || root < 0 || root >= ranks ||
        block <= 0 || expected < block || share_own < 0 || share_own > block || share_in_place < 0 ||
        share_in_place > block || write_piece < 0 || (write_piece > 0 && kind != KIND_ALL_GATHER) || spin_ns < 0 || yield_ns < 0 || npartners >= ranks)
        return PyErr_Format(PyExc_ValueError, "inconsistent reads plan");
    ReadsPlan *p = (ReadsPlan *)type->tp_alloc(type, 0);
    if (p == NULL) return NULL;
    p->vectorcall = ReadsPlan_vectorcall;
    p->kind = kind, p->root = root, p->npartners = (int)npartners, p->expected = expected, p->block = block;
    p->share_own = share_own, p->share_in_place = share_in_place, p->copy_first = copy_first, p->stream = stream;
    p->write_piece = write_piece;
    Py_INCREF(keep);
    p->keep = keep;
    if (take_flag_set(&p->w, flags, doorbells, sleepers, ranks, bells, me, cpu_slot, spin_ns, yield_ns) < 0) {
        Py_DECREF(p);
        return NULL;
    }
    p->partners = PyMem_Calloc((size_t)npartners + 1, sizeof(int));
    p->pids = PyMem_Calloc((size_t)ranks, sizeof(pid_t));
    long *numbers = PyMem_Calloc((size_t)(ranks + npartners + SLOTS), sizeof(long));
    if (!p->partners || !p->pids || !numbers) {
        PyMem_Free(numbers);
        Py_DECREF(p);
        return PyErr_NoMemory();
    }
    int bad = integers(pids, ranks, 0, numbers, "pids") < 0 ||
              integers(partners, npartners, 0, numbers + ranks, "partners") < 0 ||
              integers(slots, SLOTS, 0, numbers + ranks + npartners, "slots") < 0;
    for (Py_ssize_t i = 0; !bad && i < ranks; i++) p->pids[i] = (pid_t)numbers[i];
    for (Py_ssize_t i = 0; !bad && i < npartners; i++) {
        long q = numbers[ranks + i];
        if (q < 0 || q >= ranks || q == me) bad = (PyErr_Format(PyExc_ValueError, "partner %ld out of range", q), 1);
        else p->partners[i] = (int)q;
    }
    for (int i = 0; !bad && i < SLOTS; i++) p->slot[i] = (int)numbers[ranks + npartners + i];
    PyMem_Free(numbers);
    if (bad) {
        Py_DECREF(p);
        return NULL;
    }
    return (PyObject *)p;
}

static PyMemberDef ReadsPlan_members[] = {
    {"staged", T_ULONGLONG, offsetof(ReadsPlan, staged), READONLY,
     "an all-to-all in place: bit q set where the last call read peer q's block into the inbox"},
    {NULL},
};

static PyTypeObject ReadsPlanType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "collectives.engines._reads_c.ReadsPlan",
    .tp_basicsize = sizeof(ReadsPlan),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_vectorcall_offset = offsetof(ReadsPlan, vectorcall),
    .tp_new = ReadsPlan_new,
    .tp_call = PyVectorcall_Call,
    .tp_dealloc = (destructor)ReadsPlan_dealloc,
    .tp_doc = "One shape of exchange by reads of peers' memory, run in C up to the first late peer.",
    .tp_members = ReadsPlan_members,
};

/* -- folds by reads: reduces and reduce-scatters (engines/direct.py's reduce_by_reads and
   reduce_scatter_by_reads) --------------------------------------------------------------

   Rank r reads block r of every peer's ``x``, a step's piece at a time, and folds it into its
   ``mine`` (own contribution first, then the others in rank order: the bits of the Python
   plan's numpy folds); a reduce posts RED after each step and its root reads every peer's
   folded piece of the step out of the peer's ``mine`` into its ``result`` (in the Python plan's
   order). Same flags and addresses as the Python plan: ADDR (my x), RESULT (my mine), LEN,
   POSTED, RED, READ. An all-reduce (``root`` EVERY_RANK, direct.py's all_reduce_by_reads) is a
   reduce whose every rank is the root: each reads every peer's folded piece of a step into its
   ``result``. Hands back where a peer is late, a count differs or the kernel refuses a read: the
   Python plan resumes from the state returned (direct.py, ``FOLD_*``). */

enum { F_POSTED, F_READ, F_ADDR, F_RESULT, F_LEN, F_RED, FSLOTS }; /* indices into ``slot`` */
#define EVERY_RANK (-2) /* ``root`` of an all-reduce: every rank reads every folded piece */

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall; /* how Python calls it: FoldPlan_vectorcall */
    FlagSet w;
    int root;                  /* the reduce's root, -1: a reduce-scatter, EVERY_RANK: an all-reduce */
    int dtype, op, itemsize;
    int slot[FSLOTS];
    pid_t *pids;               /* [ranks]: each window rank's process */
    uint64_t *inputs, *outputs; /* [ranks]: the peers' x and mine this call */
    Py_ssize_t count, chunk, sub; /* elements of x, elements per step, bytes per read (a step's piece in parts) */
    PyObject *keep;
} FoldPlan;

/* Block q of ``count`` elements in ``ranks`` parts: the first count % ranks one element longer
   (algorithms/schedule.py's partition). */
static void fold_block(const FoldPlan *p, int q, Py_ssize_t *lo, Py_ssize_t *n) {
    Py_ssize_t ranks = p->w.ranks, base = p->count / ranks, extra = p->count % ranks;
    *n = base + (q < extra);
    *lo = q * base + (q < extra ? q : extra);
}

/* Steps of a call: one per piece of the longest block (at least one). */
static Py_ssize_t fold_steps(const FoldPlan *p) {
    Py_ssize_t lo, n;
    fold_block(p, 0, &lo, &n);
    Py_ssize_t steps = (n + p->chunk - 1) / p->chunk;
    return steps < 1 ? 1 : steps;
}

/* dst[:m] = own[:m] op (every peer's x at element ``at``, in rank order), each peer's part read
   into ``piece`` in reads of at most ``sub`` bytes (every element folded in the same order as a
   whole piece at a time: the same bits). 1 done; 0 where the kernel refused a read, which it does
   only for a peer that is gone (the Python plan's read of it raises). */
static int fold_piece(FoldPlan *p, char *dst, const char *own, Py_ssize_t at, Py_ssize_t m, char *piece) {
    size_t item = (size_t)p->itemsize, total = (size_t)m * item, sub = (size_t)p->sub;
    int me = p->w.me, ranks = p->w.ranks;
    for (size_t off = 0; off < total; off += sub) {
        size_t len = total - off < sub ? total - off : sub;
        int first = 1;
        for (int q = 0; q < ranks; q++) {
            if (q == me) continue;
            if (!cma_copy(p->pids[q], 0, piece, p->inputs[q] + ((size_t)at * item + off), len)) return 0;
            if (first) fold3(p->dtype, p->op, dst + off, own + off, piece, (Py_ssize_t)len);
            else fold(p->dtype, p->op, dst + off, piece, (Py_ssize_t)len);
            first = 0;
        }
    }
    return 1;
}

/* One call. s when done; 0 when nothing was done (the Python plan runs the call); else
   -(1 + k): k = 0, posted but a peer's POSTED (or its count) still to come; k = 1 + c * ranks
   + phase, step c to do from ``phase`` (0: its fold; 1 + i: folded and RED posted, the root's
   reads of i of the others done; a reduce-scatter's steps are its pieces, with no RED); c = the
   steps: READ posted, a peer's READ still to come. */
static long long fold_run(FoldPlan *p, const char *x, char *mine, char *result, char *piece, uint64_t serial) {
    int me = p->w.me, ranks = p->w.ranks;
    size_t item = (size_t)p->itemsize;
    Py_ssize_t lo, n, steps = p->root == -1 ? 1 : fold_steps(p);
    fold_block(p, me, &lo, &n);
    uint64_t last = serial + (uint64_t)steps;
    set_word(&p->w, p->slot[F_ADDR], (uint64_t)(uintptr_t)x);
    set_word(&p->w, p->slot[F_RESULT], (uint64_t)(uintptr_t)mine);
    set_word(&p->w, p->slot[F_LEN], (uint64_t)p->count * item);
    post(&p->w, p->slot[F_POSTED], last);
    for (int q = 0; q < ranks; q++) {
        if (q == me) continue;
        if (!reach(&p->w, q, p->slot[F_POSTED], serial + 1) ||
            load_flag(&p->w, q, p->slot[F_LEN]) != (uint64_t)p->count * item)
            return -1;
        p->inputs[q] = load_flag(&p->w, q, p->slot[F_ADDR]);
        p->outputs[q] = load_flag(&p->w, q, p->slot[F_RESULT]);
    }
    if (p->root == -1) { /* a reduce-scatter: my block in steps, no RED */
        for (Py_ssize_t at = 0; at < n; at += p->chunk) {
            Py_ssize_t m = n - at < p->chunk ? n - at : p->chunk;
            if (!fold_piece(p, mine + (size_t)at * item, x + (size_t)(lo + at) * item, lo + at, m, piece))
                return -(2 + (long long)at / p->chunk * ranks);
        }
    } else {
        for (Py_ssize_t c = 0; c < steps; c++) {
            uint64_t s = serial + 1 + (uint64_t)c;
            Py_ssize_t at = c * p->chunk, m = n - at < p->chunk ? n - at : p->chunk;
            if (m > 0 && !fold_piece(p, mine + (size_t)at * item, x + (size_t)(lo + at) * item, lo + at, m, piece))
                return -(2 + (long long)c * ranks);
            post(&p->w, p->slot[F_RED], s);
            if (me != p->root && p->root != EVERY_RANK) continue;
            for (int q = 0, i = 0; q < ranks; q++) {
                if (q == me) continue;
                Py_ssize_t qlo, qn;
                fold_block(p, q, &qlo, &qn);
                Py_ssize_t qm = qn - at < p->chunk ? qn - at : p->chunk;
                if (qm > 0) {
                    if (!reach(&p->w, q, p->slot[F_RED], s) ||
                        !cma_copy(p->pids[q], 0, result + (size_t)(qlo + at) * item, p->outputs[q] + (size_t)at * item,
                                  (size_t)qm * item))
                        return -(2 + (long long)c * ranks + 1 + i);
                }
                i++;
            }
        }
    }
    post(&p->w, p->slot[F_READ], last);
    /* the steps done (a reduce-scatter's: its pieces) */
    long long done = p->root == -1 ? (n + p->chunk - 1) / p->chunk : steps;
    for (int q = 0; q < ranks; q++)
        if (q != me && !reach(&p->w, q, p->slot[F_READ], last)) return -(2 + done * ranks);
    return (long long)last;
}

/* (x, mine, result, piece, serial): my whole x; where my block is folded (the root's: its block
   of ``result``); the root's result (every rank's in an all-reduce; None elsewhere and in a
   reduce-scatter); the scratch piece.
   0 (the Python plan runs the call) where a buffer is not what the plan's shape says, or where
   ``mine`` overlaps ``x`` other than as my own block of it, or ``result`` overlaps ``x`` other
   than as x itself. */
static PyObject *FoldPlan_call(FoldPlan *p, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 5) return PyErr_Format(PyExc_TypeError, "a fold plan takes (x, mine, result, piece, serial)");
    unsigned long long serial = PyLong_AsUnsignedLongLong(args[4]);
    if (PyErr_Occurred()) return NULL;
    size_t item = (size_t)p->itemsize, bytes = (size_t)p->count * item;
    Py_ssize_t lo, n;
    fold_block(p, p->w.me, &lo, &n);
    int at_root = p->w.me == p->root || p->root == EVERY_RANK;
    if ((args[2] == Py_None) == at_root || p->w.ranks < 2) return PyLong_FromLong(0);
    Py_buffer xb = {0}, mb = {0}, rb = {0}, pb = {0};
    long long state = 0;
    if (take(args[0], 0, (Py_ssize_t)bytes, &xb) && take(args[1], 1, n * p->itemsize, &mb) &&
        take(args[2], 1, at_root ? (Py_ssize_t)bytes : -1, &rb) && take(args[3], 1, -1, &pb) && pb.obj &&
        pb.len >= (p->chunk * p->itemsize < p->sub ? p->chunk * p->itemsize : p->sub)) {
        const char *x = xb.buf, *own = x + (size_t)lo * item;
        char *mine = mb.buf;
        int mine_ok = !overlap(x, bytes, mine, (size_t)n * item) || mine == own;
        int result_ok = !at_root || rb.buf == (void *)x || !overlap(x, bytes, rb.buf, bytes);
        if (at_root && mine != (char *)rb.buf + (size_t)lo * item) mine_ok = 0;
        if (mine_ok && result_ok)
            state = fold_run(p, x, mine, rb.obj ? rb.buf : NULL, pb.buf, serial);
    }
    if (pb.obj) PyBuffer_Release(&pb);
    if (rb.obj) PyBuffer_Release(&rb);
    if (mb.obj) PyBuffer_Release(&mb);
    if (xb.obj) PyBuffer_Release(&xb);
    return PyLong_FromLongLong(state);
}

static PyObject *FoldPlan_vectorcall(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    if (kwnames != NULL && PyTuple_GET_SIZE(kwnames)) return PyErr_Format(PyExc_TypeError, "no keyword arguments");
    return FoldPlan_call((FoldPlan *)self, args, PyVectorcall_NARGS(nargsf));
}

static void FoldPlan_dealloc(FoldPlan *p) {
    free_flag_set(&p->w);
    PyMem_Free(p->pids);
    PyMem_Free(p->inputs);
    PyMem_Free(p->outputs);
    Py_XDECREF(p->keep);
    Py_TYPE(p)->tp_free((PyObject *)p);
}

static PyObject *FoldPlan_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    static char *names[] = {"me", "root", "flags", "doorbells", "sleepers", "pids", "slots", "count", "itemsize",
                            "dtype", "op", "chunk", "sub", "spin_ns", "yield_ns", "cpu_slot", "keep", NULL};
    int me, root, itemsize, dtype, op, cpu_slot;
    Py_ssize_t count, chunk, sub;
    long long spin_ns, yield_ns;
    PyObject *flags, *doorbells, *sleepers, *pids, *slots, *keep;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "iiOOOOOniiinnLLiO", names, &me, &root, &flags, &doorbells,
                                     &sleepers, &pids, &slots, &count, &itemsize, &dtype, &op, &chunk, &sub,
                                     &spin_ns, &yield_ns, &cpu_slot, &keep))
        return NULL;
    Py_ssize_t ranks = PySequence_Length(flags), bells = PySequence_Length(doorbells);
    if (ranks < 1 || bells < 0) return NULL;
    if (me < 0 || me >= ranks || root < EVERY_RANK || root >= ranks || count < 1 || chunk < 1 || sub < itemsize ||
        sub % itemsize || dtype < 0 || dtype >= T_COUNT || itemsize != ITEM_SIZE[dtype] || !folds(dtype, op) ||
        spin_ns < 0 || yield_ns < 0)
        return PyErr_Format(PyExc_ValueError, "inconsistent fold plan");
    FoldPlan *p = (FoldPlan *)type->tp_alloc(type, 0);
    if (p == NULL) return NULL;
    p->vectorcall = FoldPlan_vectorcall;
    p->root = root, p->dtype = dtype, p->op = op, p->itemsize = itemsize;
    p->count = count, p->chunk = chunk, p->sub = sub;
    Py_INCREF(keep);
    p->keep = keep;
    if (take_flag_set(&p->w, flags, doorbells, sleepers, ranks, bells, me, cpu_slot, spin_ns, yield_ns) < 0) {
        Py_DECREF(p);
        return NULL;
    }
    p->pids = PyMem_Calloc((size_t)ranks, sizeof(pid_t));
    p->inputs = PyMem_Calloc((size_t)ranks, sizeof(uint64_t));
    p->outputs = PyMem_Calloc((size_t)ranks, sizeof(uint64_t));
    long *numbers = PyMem_Calloc((size_t)(ranks + FSLOTS), sizeof(long));
    if (!p->pids || !p->inputs || !p->outputs || !numbers) {
        PyMem_Free(numbers);
        Py_DECREF(p);
        return PyErr_NoMemory();
    }
    int bad = integers(pids, ranks, 0, numbers, "pids") < 0 || integers(slots, FSLOTS, 0, numbers + ranks, "slots") < 0;
    for (Py_ssize_t i = 0; !bad && i < ranks; i++) p->pids[i] = (pid_t)numbers[i];
    for (int i = 0; !bad && i < FSLOTS; i++) p->slot[i] = (int)numbers[ranks + i];
    PyMem_Free(numbers);
    if (bad) {
        Py_DECREF(p);
        return NULL;
    }
    return (PyObject *)p;
}

static PyTypeObject FoldPlanType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "collectives.engines._reads_c.FoldPlan",
    .tp_basicsize = sizeof(FoldPlan),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_vectorcall_offset = offsetof(FoldPlan, vectorcall),
    .tp_new = FoldPlan_new,
    .tp_call = PyVectorcall_Call,
    .tp_dealloc = (destructor)FoldPlan_dealloc,
    .tp_doc = "One shape of reduce or reduce-scatter by reads of peers' memory, run in C up to the first late peer.",
};

/* The single copies of an all-gather's steps, timed alone (collectives/single_copies.py, collectives-tune,
   perf/cma_copies.py): ``calls`` back-to-back copies of ``n`` bytes, no flags; the mean ns a call, -1 where the
   kernel refused one. Modes: 0 memcpy my src into my dst, 1 one process_vm_readv of the peer's src into my dst,
   2 one process_vm_writev of my src into the peer's dst, 3 memcpy (into dst + n) then read (the route by reads),
   4 write then memcpy into dst + n, piece by piece (the route by writes). One syscall a copy, as the plans'
   copies of blocks within a piece. */
static int copy_once(pid_t pid, int write, char *local, uint64_t remote, size_t n) {
    struct iovec mine = {local, n}, theirs = {(void *)(uintptr_t)remote, n};
    ssize_t got = write ? process_vm_writev(pid, &mine, 1, &theirs, 1, 0)
                        : process_vm_readv(pid, &mine, 1, &theirs, 1, 0);
    return got == (ssize_t)n;
}

static int64_t copy_loop(int mode, pid_t pid, char *src, char *dst, uint64_t peer_src, uint64_t peer_dst, size_t n,
                         size_t piece, int calls) {
    int64_t t0 = now_ns();
    for (int c = 0; c < calls; c++) {
        switch (mode) {
        case 0: memcpy(dst, src, n); break;
        case 1: if (!copy_once(pid, 0, dst, peer_src, n)) return -1; break;
        case 2: if (!copy_once(pid, 1, src, peer_dst, n)) return -1; break;
        case 3: memcpy(dst + n, src, n); if (!copy_once(pid, 0, dst, peer_src, n)) return -1; break;
        default:
            for (size_t at = 0; at < n; at += piece) {
                size_t m = n - at < piece ? n - at : piece;
                if (!copy_once(pid, 1, src + at, peer_dst + at, m)) return -1;
                memcpy(dst + n + at, src + at, m);
            }
        }
    }
    return (now_ns() - t0) / (calls > 0 ? calls : 1);
}

static PyObject *time_copies(PyObject *self, PyObject *args) {
    int mode, pid, calls;
    unsigned long long src, dst, peer_src, peer_dst;
    Py_ssize_t n, piece;
    if (!PyArg_ParseTuple(args, "iiKKKKnni", &mode, &pid, &src, &dst, &peer_src, &peer_dst, &n, &piece, &calls))
        return NULL;
    if (mode < 0 || mode > 4 || n < 0 || piece <= 0 || calls < 1) {
        PyErr_SetString(PyExc_ValueError, "time_copies: mode 0-4, n >= 0, piece > 0 and calls >= 1");
        return NULL;
    }
    int64_t ns;
    Py_BEGIN_ALLOW_THREADS
    ns = copy_loop(mode, (pid_t)pid, (char *)(uintptr_t)src, (char *)(uintptr_t)dst, peer_src, peer_dst, (size_t)n,
                   (size_t)piece, calls);
    Py_END_ALLOW_THREADS
    return PyLong_FromLongLong(ns);
}

static PyMethodDef functions[] = {
    {"time_copies", time_copies, METH_VARARGS,
     "time_copies(mode, pid, src, dst, peer_src, peer_dst, n, piece, calls): mean ns a call of the single copies"
     " (0 memcpy, 1 read, 2 write, 3 memcpy + read, 4 write + memcpy by pieces); -1 where the kernel refused one."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_reads_c",
                                    "Exchanges, reduces and reduce-scatters by reads of peers' memory in C.", -1,
                                    functions};

PyMODINIT_FUNC PyInit__reads_c(void) {
    if (PyType_Ready(&ReadsPlanType) < 0 || PyType_Ready(&FoldPlanType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    Py_INCREF(&ReadsPlanType);
    if (PyModule_AddObject(m, "ReadsPlan", (PyObject *)&ReadsPlanType) < 0) {
        Py_DECREF(&ReadsPlanType);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&FoldPlanType);
    if (PyModule_AddObject(m, "FoldPlan", (PyObject *)&FoldPlanType) < 0) {
        Py_DECREF(&FoldPlanType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
