/* The 2-rank all-reduce over one tcp socket in one C call (engines/tcp_pair.py): the recursive
   schedule's reduce-scatter and all-gather halves (algorithms/recursive.py at 2 ranks) as two byte
   streams, with no interpreter turn between the socket calls.

   The bytes on the wire are the Python path's, frame for frame: every message of the schedule (one
   `seg`-element segment) is one frame, a 16-byte header (tag: u64, nbytes: u32, flags: u32 = END)
   then its payload (transports/frames.py). The send stream is the segments of the half this rank
   gives away (read from `src`), then the segments of the half it keeps, each once folded (read from
   `dst`); the receive stream is the peer's segments of the kept half (read through a bounce and folded:
   dst = src + received, "there op received" as the Python fold), then the peer's half (read straight
   into `dst`). So a peer on the Python path (a busy channel, no C part) matches it message by message.

   Sends run at most `window` bytes of stream ahead of the receive. A read of the fold half waits,
   in poll(), for at least `read_bytes` (SO_RCVLOWAT; reset to 1 before returning). A wait polls without
   sleeping for up to `spin_ns` (0 where ranks outnumber cores), then sleeps in poll() for at most
   `slice_ms`, and returns WAIT when that passes with nothing moved, so that the caller checks its
   deadline, the channel and signals, and calls again. All progress lives in `state` (an int64 array
   kept by the caller), so a call resumes where the last one stopped. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#define HEADER_SIZE 16
#define FLAG_END 1u

/* return codes (negative: -errno of a socket call) */
#define DONE 0
#define WAIT 1       /* a slice passed with nothing moved */
#define FOREIGN 2    /* a whole header of another tag was read: state[S_HDR..] holds it */
#define CLOSED 3     /* the peer closed its end of the stream */
#define MISMATCH 4   /* a frame of our tag that is not the one the schedule expects */

/* state slots */
enum { S_SENT, S_RECVD, S_FOLDED, S_BHAVE, S_HGOT, S_HDR0, S_HDR1, S_LOWAT, S_SLOTS };

enum { K_F32, K_F64, K_I32, K_I64 };

static long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000L + t.tv_nsec;
}

/* dst[i] = a[i] + b[i] for `n` bytes of elements of kind `kind` (integers wrap, as numpy's) */
static void fold(int kind, char *dst, const char *a, const char *b, size_t n) {
    switch (kind) {
    case K_F32: {
        float *d = (float *)dst;
        const float *x = (const float *)a, *y = (const float *)b;
        for (size_t i = 0; i < n / 4; i++) d[i] = x[i] + y[i];
        break;
    }
    case K_F64: {
        double *d = (double *)dst;
        const double *x = (const double *)a, *y = (const double *)b;
        for (size_t i = 0; i < n / 8; i++) d[i] = x[i] + y[i];
        break;
    }
    case K_I32: {
        uint32_t *d = (uint32_t *)dst;
        const uint32_t *x = (const uint32_t *)a, *y = (const uint32_t *)b;
        for (size_t i = 0; i < n / 4; i++) d[i] = x[i] + y[i];
        break;
    }
    default: {
        uint64_t *d = (uint64_t *)dst;
        const uint64_t *x = (const uint64_t *)a, *y = (const uint64_t *)b;
        for (size_t i = 0; i < n / 8; i++) d[i] = x[i] + y[i];
        break;
    }
    }
}

/* One half of a stream: `bytes` of payload in segments of `seg` bytes, each behind a header.
   Positions are in stream bytes (headers counted). */
typedef struct {
    size_t bytes, seg, frames, stream;
} half_t;

static half_t half_of(size_t bytes, size_t seg) {
    half_t h = {bytes, seg, bytes ? (bytes + seg - 1) / seg : 1, 0};
    h.stream = h.bytes + h.frames * HEADER_SIZE;
    return h;
}

/* Where stream position `pos` (< h.stream) falls: frame index, offset in it (header counted), the
   payload bytes before that frame, and that frame's payload size. */
static void locate(const half_t *h, size_t pos, size_t *frame, size_t *in_frame, size_t *before, size_t *size) {
    size_t whole = h->seg + HEADER_SIZE;
    size_t f = pos / whole;
    if (f >= h->frames) f = h->frames - 1;
    *frame = f;
    *in_frame = pos - f * whole;
    *before = f * h->seg;
    *size = f + 1 < h->frames ? h->seg : h->bytes - f * h->seg;
}

static void put_header(unsigned char *out, uint64_t tag, uint32_t nbytes) {
    uint32_t flags = FLAG_END;
    memcpy(out, &tag, 8);  /* little-endian hosts only (the module is not built elsewhere: see below) */
    memcpy(out + 8, &nbytes, 4);
    memcpy(out + 12, &flags, 4);
}

typedef struct {
    int fd, kind, full;  /* full: the last send found the socket full */
    size_t itemsize;
    char *src, *dst, *bounce;
    size_t bounce_b, read_bytes, window;
    uint64_t tag;
    half_t give, keep;  /* the send stream: give then keep; the receive stream: keep then give */
    char *give_src, *give_dst, *keep_src, *keep_dst;
    long long *st;
} run_t;

static void set_lowat(run_t *r, long long want) {
    if (r->st[S_LOWAT] == want) return;
    int v = (int)want;
    setsockopt(r->fd, SOL_SOCKET, SO_RCVLOWAT, &v, sizeof v);
    r->st[S_LOWAT] = want;
}

/* Try one send; returns bytes sent, 0 when the socket is full or nothing may go, -errno */
static ssize_t try_send(run_t *r) {
    long long *st = r->st;
    size_t sent = (size_t)st[S_SENT], total = r->give.stream + r->keep.stream;
    if (sent >= total) return 0;
    size_t limit = (size_t)st[S_RECVD] + r->window;
    if (sent >= limit) return 0;
    const half_t *h = sent < r->give.stream ? &r->give : &r->keep;
    size_t pos = sent < r->give.stream ? sent : sent - r->give.stream;
    size_t frame, in_frame, before, size;
    locate(h, pos, &frame, &in_frame, &before, &size);
    const char *payload = h == &r->give ? r->give_src + before : r->keep_dst + before;
    if (h == &r->keep && (size_t)st[S_FOLDED] < before + size) return 0;  /* not folded yet */
    unsigned char header[HEADER_SIZE];
    struct iovec iov[2];
    int n = 0;
    size_t room = limit - sent;
    if (in_frame < HEADER_SIZE) {
        put_header(header, r->tag, (uint32_t)size);
        iov[n].iov_base = header + in_frame;
        iov[n].iov_len = HEADER_SIZE - in_frame;
        n++;
        iov[n].iov_base = (void *)payload;
        iov[n].iov_len = size;
        n++;
    } else {
        iov[n].iov_base = (void *)(payload + in_frame - HEADER_SIZE);
        iov[n].iov_len = size - (in_frame - HEADER_SIZE);
        n++;
    }
    /* cap at the window */
    size_t len = 0;
    for (int i = 0; i < n; i++) {
        if (len + iov[i].iov_len > room) {
            iov[i].iov_len = room - len;
            n = i + 1;
        }
        len += iov[i].iov_len;
    }
    struct msghdr m;
    memset(&m, 0, sizeof m);
    m.msg_iov = iov;
    m.msg_iovlen = (size_t)n;
    ssize_t k = sendmsg(r->fd, &m, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (k > 0) {
        st[S_SENT] += k;
        return k;
    }
    if (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return -errno;
    r->full = 1;
    return 0;
}

/* Try one read; returns bytes read (> 0), 0 when none is there, or a code as -(1000 + code) / -errno */
static ssize_t try_recv(run_t *r, int *code) {
    long long *st = r->st;
    size_t got = (size_t)st[S_RECVD], total = r->keep.stream + r->give.stream;
    *code = DONE;
    if (got >= total) return 0;
    int folding = got < r->keep.stream;
    const half_t *h = folding ? &r->keep : &r->give;
    size_t pos = folding ? got : got - r->keep.stream;
    size_t frame, in_frame, before, size;
    locate(h, pos, &frame, &in_frame, &before, &size);
    ssize_t k;
    if (in_frame < HEADER_SIZE) {  /* the header, alone: a frame of another tag must not be over-read */
        unsigned char *hdr = (unsigned char *)&st[S_HDR0];
        size_t hgot = (size_t)st[S_HGOT];
        k = recv(r->fd, hdr + hgot, HEADER_SIZE - hgot, MSG_DONTWAIT);
        if (k == 0) { *code = CLOSED; return -1; }
        if (k < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return 0;
            return -errno;
        }
        hgot += (size_t)k;
        st[S_HGOT] = (long long)hgot;
        if (hgot < HEADER_SIZE) return k;
        st[S_HGOT] = 0;
        uint64_t tag;
        uint32_t nbytes, flags;
        memcpy(&tag, hdr, 8);
        memcpy(&nbytes, hdr + 8, 4);
        memcpy(&flags, hdr + 12, 4);
        if (tag != r->tag) { *code = FOREIGN; return -1; }  /* the header stays in state for the caller */
        if (nbytes != size || flags != FLAG_END) { *code = MISMATCH; return -1; }
        st[S_RECVD] += HEADER_SIZE;
        return k;
    }
    size_t off = in_frame - HEADER_SIZE, want = size - off;
    if (folding) {
        size_t bhave = (size_t)st[S_BHAVE];
        if (want > r->bounce_b - bhave) want = r->bounce_b - bhave;
        k = recv(r->fd, r->bounce + bhave, want, MSG_DONTWAIT);
        if (k > 0) {
            bhave += (size_t)k;
            st[S_RECVD] += k;
            size_t at = before + off - (bhave - (size_t)k);  /* payload offset of the bounce's first byte */
            size_t whole = off + (size_t)k == size ? bhave : bhave - bhave % r->itemsize;
            if (whole) {  /* whole elements only; a frame ends on one (segments are whole elements) */
                fold(r->kind, r->keep_dst + at, r->keep_src + at, r->bounce, whole);
                memmove(r->bounce, r->bounce + whole, bhave - whole);
                bhave -= whole;
                st[S_FOLDED] = (long long)(at + whole);
            }
            st[S_BHAVE] = (long long)bhave;
        }
    } else {
        k = recv(r->fd, r->give_dst + before + off, want, MSG_DONTWAIT);
        if (k > 0) st[S_RECVD] += k;
    }
    if (k == 0) { *code = CLOSED; return -1; }
    if (k < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return 0;
        return -errno;
    }
    return k;
}

static int run(run_t *r, long spin_ns, int slice_ms) {
    long long *st = r->st;
    size_t s_total = r->give.stream + r->keep.stream, r_total = r->keep.stream + r->give.stream;
    for (;;) {
        int moved = 0, code;
        ssize_t k;
        r->full = 0;
        while ((k = try_send(r)) > 0) moved = 1;
        if (k < 0) return (int)k;
        k = try_recv(r, &code);
        if (code != DONE) return code;
        if (k < 0) return (int)k;
        if (k > 0) moved = 1;
        if ((size_t)st[S_SENT] >= s_total && (size_t)st[S_RECVD] >= r_total) return DONE;
        if (moved) continue;
        /* nothing moved: wait for the socket */
        short events = 0;
        size_t got = (size_t)st[S_RECVD];
        if (got < r_total) {  /* wake for the rest of the header, or for read_bytes of the payload */
            events |= POLLIN;
            int folding = got < r->keep.stream;
            const half_t *h = folding ? &r->keep : &r->give;
            size_t frame, in_frame, before, size, want;
            locate(h, folding ? got : got - r->keep.stream, &frame, &in_frame, &before, &size);
            if (in_frame < HEADER_SIZE) want = HEADER_SIZE - (size_t)st[S_HGOT];
            else want = size - (in_frame - HEADER_SIZE);
            if (folding && in_frame >= HEADER_SIZE && want > r->bounce_b - (size_t)st[S_BHAVE])
                want = r->bounce_b - (size_t)st[S_BHAVE];
            set_lowat(r, (long long)(want < r->read_bytes ? want : r->read_bytes));
        }
        if (r->full) events |= POLLOUT;
        if (!events) return -EINVAL;  /* cannot be: nothing to wait for, yet not done */
        struct pollfd p = {r->fd, events, 0};
        int rc = 0;
        if (spin_ns > 0) {
            long end = now_ns() + spin_ns;
            do {
                rc = poll(&p, 1, 0);
            } while (rc == 0 && now_ns() < end);
        }
        if (rc == 0) rc = poll(&p, 1, slice_ms);
        if (rc == 0) return WAIT;
        if (rc < 0) {
            if (errno == EINTR) return WAIT;
            return -errno;
        }
        if (p.revents & (POLLERR | POLLNVAL)) {
            if (p.revents & POLLNVAL) return -EBADF;
            int err = 0;
            socklen_t len = sizeof err;
            getsockopt(r->fd, SOL_SOCKET, SO_ERROR, &err, &len);
            return err ? -err : -ECONNRESET;
        }
    }
}

static PyObject *pair_all_reduce(PyObject *self, PyObject *args) {
    (void)self;
    int fd, kind, rank;
    unsigned long long tag;
    Py_ssize_t count, itemsize, seg, window, read_bytes;
    long spin_ns;
    int slice_ms;
    Py_buffer src, dst, state, bounce;
    if (!PyArg_ParseTuple(args, "iy*w*iinnnKw*w*nnli", &fd, &src, &dst, &kind, &rank, &count, &itemsize, &seg, &tag,
                          &state, &bounce, &window, &read_bytes, &spin_ns, &slice_ms))
        return NULL;
    PyObject *result = NULL;
    if (count < 2 || itemsize <= 0 || seg <= 0 || (rank != 0 && rank != 1) || kind < K_F32 || kind > K_I64 ||
        src.len < count * itemsize || dst.len < count * itemsize || state.len < (Py_ssize_t)(S_SLOTS * 8) ||
        bounce.len < 4096 || window <= 0 || read_bytes <= 0 || seg * itemsize > (Py_ssize_t)UINT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "pair_all_reduce: bad arguments");
        goto out;
    }
    run_t r;
    memset(&r, 0, sizeof r);
    r.fd = fd;
    r.kind = kind;
    r.itemsize = (size_t)itemsize;
    r.src = src.buf;
    r.dst = dst.buf;
    r.bounce = bounce.buf;
    r.bounce_b = (size_t)bounce.len & ~(size_t)7;
    r.read_bytes = (size_t)read_bytes;
    r.window = (size_t)window;
    r.tag = tag;
    r.st = state.buf;
    /* partition(count, 2): block 0 has the odd element */
    size_t n0 = (size_t)(count + 1) / 2, n1 = (size_t)count - n0, is = (size_t)itemsize;
    size_t keep_off = rank == 0 ? 0 : n0 * is, give_off = rank == 0 ? n0 * is : 0;
    size_t keep_b = (rank == 0 ? n0 : n1) * is, give_b = (rank == 0 ? n1 : n0) * is;
    r.give = half_of(give_b, (size_t)seg * is);
    r.keep = half_of(keep_b, (size_t)seg * is);
    r.give_src = r.src + give_off;
    r.give_dst = r.dst + give_off;
    r.keep_src = r.src + keep_off;
    r.keep_dst = r.dst + keep_off;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = run(&r, spin_ns, slice_ms);
    if (r.st[S_LOWAT] > 1) {
        int v = 1;
        setsockopt(fd, SOL_SOCKET, SO_RCVLOWAT, &v, sizeof v);
    }
    r.st[S_LOWAT] = 1;
    Py_END_ALLOW_THREADS
    result = PyLong_FromLong(rc);
out:
    PyBuffer_Release(&src);
    PyBuffer_Release(&dst);
    PyBuffer_Release(&state);
    PyBuffer_Release(&bounce);
    return result;
}

static PyMethodDef methods[] = {
    {"pair_all_reduce", pair_all_reduce, METH_VARARGS,
     "pair_all_reduce(fd, src, dst, kind, rank, count, itemsize, seg, tag, state, bounce, window, read_bytes, "
     "spin_ns, slice_ms) -> code: the 2-rank recursive all-reduce's streams over one tcp socket, resumable"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_tcp_pair_c", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__tcp_pair_c(void) {
#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
    PyErr_SetString(PyExc_ImportError, "_tcp_pair_c writes little-endian frame headers only");
    return NULL;
#endif
    return PyModule_Create(&module);
}
