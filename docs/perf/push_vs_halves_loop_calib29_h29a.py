# Needs a scratch build whose Express has a writable half_out_bytes member (the patch: /tmp/me/h29a/scratch_member.diff,
# one PyMemberDef line {"half_out_bytes", T_PYSSIZET, offsetof(Express, half_out_bytes), 0, ...}); not part of the library.
"""In one world, reps alternating the lane's push bound (half_out_bytes): 128 KiB (main: halves) / 2 MiB (push).
hypercube's exchange: per rep a barrier, then ITERS calls of (own block copied in, sendrecv), µs per call, the slower rank."""
import sys, time, json
import numpy as np
from collectives.testing import run_world
SIZES = [int(float(x) * 1024) for x in sys.argv[1].split(",")]  # block KiB
REPS, ITERS = int(sys.argv[2]), int(sys.argv[3])
INPLACE = len(sys.argv) > 4 and sys.argv[4] in ("in", "apart")
APART = len(sys.argv) > 4 and sys.argv[4] == "apart"
MODES = {"halves": 128 << 10, "push": 64 << 20}

def body(comm):
    e = comm._express
    res = {}
    for k in SIZES:
        n = k // 4
        send = np.full(n, comm.rank + 1, np.float32)
        recv = np.zeros(2 * n, np.float32)
        r = comm.rank
        mine, theirs = recv[r * n:(r + 1) * n], recv[(1 - r) * n:(2 - r) * n]
        mine[...] = send
        if APART:
            mine, theirs = send, np.zeros(n, np.float32)
        for rep in range(REPS):
            for mode in (MODES if rep % 2 == 0 else reversed(list(MODES))):
                e.half_out_bytes = MODES[mode]
                p0 = e.pushes
                comm.sendrecv(mine, 1 - r, theirs, 1 - r)  # untimed
                comm.barrier()
                t = time.perf_counter()
                for i in range(ITERS):
                    if not INPLACE:
                        mine[...] = send
                    comm.sendrecv(mine, 1 - r, theirs, 1 - r)
                dt = (time.perf_counter() - t) / ITERS * 1e6
                res.setdefault(f"{k >> 10}K {mode}", []).append((dt, e.pushes - p0))
        assert (theirs == 2 - r).all()
    return res

out = run_world(body, 2, "shm", timeout=600)
for key in out[0]:
    ts = [max(a[0], b[0]) for a, b in zip(out[0][key], out[1][key])]
    pushes = sorted(set(a[1] for a in out[0][key]))
    print(key, "median %.1f" % sorted(ts)[len(ts) // 2], "min %.1f" % min(ts), "pushes/rep", pushes, "reps", " ".join("%.0f" % t for t in ts))
if len(sys.argv) > 5:
    json.dump(out, open(sys.argv[5], "w"))
