/* perf/tcp_pair_loop.py's compiled loop: a 2-rank, in-place float32 sum all-reduce over one
   connected, non-blocking TCP socket in one call, with no interpreter turn inside it.

   This rank keeps half of x (rank 0 the first, rank 1 the rest). Its send stream is the other half,
   then its own half as it is folded; its receive stream is the peer's copy of its half (read into a
   bounce and added), then the peer's half (read straight into x). Sends run at most `window` bytes
   ahead of the receive, `piece` bytes a call. A read waits, in poll(), for at least `read_bytes`
   (SO_RCVLOWAT) and reads up to that much; before sleeping in poll() it polls without sleeping for up
   to `spin_ns`. stats (optional) counts send, recv and poll calls. Returns 0, -1 when the peer closed,
   -ETIMEDOUT when nothing moved for `timeout_ms`, else -errno. */
#include <errno.h>
#include <poll.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>

static long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000L + t.tv_nsec;
}

static void fold(float *restrict dst, const float *restrict src, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] += src[i];
}

static int wait_for(int fd, short events, long spin_ns, int timeout_ms, short *revents, long *stats) {
    struct pollfd p = {fd, events, 0};
    int rc;
    if (spin_ns > 0) {
        long end = now_ns() + spin_ns;
        do {
            stats[2]++;
            rc = poll(&p, 1, 0);
            if (rc != 0) break;
        } while (now_ns() < end);
    } else {
        rc = 0;
    }
    if (rc == 0) {
        stats[2]++;
        rc = poll(&p, 1, timeout_ms);
        if (rc == 0) return -ETIMEDOUT;
    }
    if (rc < 0) return errno == EINTR ? 0 : -errno;
    *revents = p.revents;
    return 0;
}

int pair_all_reduce(int fd, float *x, size_t n, int rank, size_t piece, size_t window, size_t read_bytes,
                    long spin_ns, int timeout_ms, long *stats_out) {
    long dummy[3] = {0, 0, 0};
    long *stats = stats_out ? stats_out : dummy;
    size_t half = n / 2;
    float *mine = rank == 0 ? x : x + half, *other = rank == 0 ? x + half : x;
    size_t mine_b = (rank == 0 ? half : n - half) * 4, other_b = n * 4 - mine_b;
    size_t s_total = n * 4, s_done = 0, r_total = n * 4, r_done = 0, folded = 0, bhave = 0, lowat_set = 0;
    size_t bounce_b = read_bytes < 4096 ? 4096 : (read_bytes + 3) & ~(size_t)3;
    char *bounce = aligned_alloc(4096, (bounce_b + 4095) & ~(size_t)4095);
    int can_send = 1, rc = 0;
    if (!bounce) return -ENOMEM;
    while (s_done < s_total || r_done < r_total) {
        if (s_done < s_total && can_send) {
            const char *src;
            size_t avail;
            if (s_done < other_b) {
                src = (const char *)other + s_done;
                avail = other_b - s_done;
            } else {
                src = (const char *)mine + (s_done - other_b);
                avail = folded - (s_done - other_b);
            }
            if (avail > piece) avail = piece;
            if (window) {
                size_t lim = r_done + window > s_done ? r_done + window - s_done : 0;
                if (avail > lim) avail = lim;
            }
            if (avail) {
                ssize_t k = send(fd, src, avail, MSG_NOSIGNAL | MSG_DONTWAIT);
                stats[0]++;
                if (k > 0) {
                    s_done += (size_t)k;
                    continue;
                }
                if (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) { rc = -errno; break; }
                can_send = 0;
            }
        }
        short events = 0, revents = 0;
        size_t want = 0;
        if (r_done < r_total) {
            want = r_done < mine_b ? mine_b - r_done : r_total - r_done;
            if (r_done < mine_b && want > bounce_b - bhave) want = bounce_b - bhave;
            size_t lw = want < read_bytes ? want : read_bytes;
            if (lw < 1) lw = 1;
            if (lw != lowat_set) {
                int v = (int)lw;
                setsockopt(fd, SOL_SOCKET, SO_RCVLOWAT, &v, sizeof v);
                lowat_set = lw;
            }
            events |= POLLIN;
        }
        if (s_done < s_total && !can_send) events |= POLLOUT;
        if (!events) continue;  /* only the window held the send back, and the receive is done: cannot be */
        rc = wait_for(fd, events, spin_ns, timeout_ms, &revents, stats);
        if (rc) break;
        if (revents & POLLOUT) can_send = 1;
        if (!(revents & (POLLIN | POLLHUP | POLLERR))) continue;
        if (r_done >= r_total) {  /* readable with nothing left to read: only an error or a close */
            if (revents & (POLLHUP | POLLERR)) { rc = -1; break; }
            continue;
        }
        ssize_t k;
        stats[1]++;
        if (r_done < mine_b) {
            k = recv(fd, bounce + bhave, want, MSG_DONTWAIT);
            if (k > 0) {
                r_done += (size_t)k;
                bhave += (size_t)k;
                size_t whole = bhave & ~(size_t)3;
                fold((float *)((char *)mine + folded), (const float *)bounce, whole / 4);
                folded += whole;
                memmove(bounce, bounce + whole, bhave - whole);
                bhave -= whole;
            }
        } else {
            k = recv(fd, (char *)other + (r_done - mine_b), want, MSG_DONTWAIT);
            if (k > 0) r_done += (size_t)k;
        }
        if (k == 0) { rc = -1; break; }
        if (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) { rc = -errno; break; }
    }
    if (lowat_set > 1) {
        int v = 1;
        setsockopt(fd, SOL_SOCKET, SO_RCVLOWAT, &v, sizeof v);
    }
    free(bounce);
    return rc;
}
