"""The optional C parts: the small-window collectives' happy path (collectives/engines/_small_c.c),
large exchanges by reads of peers' memory (collectives/engines/_reads_c.c), the point-to-point
express lane (collectives/engines/_express_c.c), the 2-rank tcp all-reduce's loop
(collectives/engines/_tcp_pair_c.c) and the communicator's fast-path checks
(collectives/_fast_c.c).

Everything else is in pyproject.toml. ``optional=True``: where no C compiler is present the
install goes on without them, and every call runs in Python (collectives/engines/small_native.py,
collectives/engines/exchange_reads.py, collectives/_fast_path.py, point-to-point through its engine, and the
2-rank tcp all-reduce through the executor).
"""

from setuptools import Extension, setup

FLAGS = ["-O3", "-std=c11", "-D_GNU_SOURCE"]
WAITS = "collectives/engines/_waits.h"  # included by the engines' C parts
FLAGS_H = "collectives/engines/_flags.h"  # the window plans' flags (small and reads)
SEQUENCES = "collectives/engines/_sequences.h"  # Python sequences into C arrays (small and reads)
FOLD = "collectives/engines/_fold.h"  # the C folds (small and reads)
COPY = "collectives/engines/_copy.h"  # copies that sidestep memcpy's 4K-aliased slow path (small and reads)
CMA = "collectives/engines/_cma.h"  # cross-memory copies (reads and express)
SWAP = "collectives/engines/_swap.h"  # the express lane's single-copy swap
HALF_SWAP = "collectives/engines/_half_swap.h"  # ... and its in-place swap by halves
LANE = ["collectives/engines/_lane_ring.h", "collectives/engines/_lane_gate.h"]  # the express lane's rings and gates

setup(ext_modules=[
    Extension("collectives.engines._small_c", ["collectives/engines/_small_c.c"],
              depends=[WAITS, FLAGS_H, SEQUENCES, COPY, FOLD],
              extra_compile_args=FLAGS, optional=True),
    Extension("collectives.engines._reads_c", ["collectives/engines/_reads_c.c"],
              depends=[WAITS, FLAGS_H, SEQUENCES, COPY, CMA, FOLD],
              extra_compile_args=FLAGS, optional=True),
    Extension("collectives.engines._express_c", ["collectives/engines/_express_c.c"], depends=[WAITS, CMA, SWAP, HALF_SWAP, *LANE],
              extra_compile_args=FLAGS, optional=True),
    Extension("collectives.engines._tcp_pair_c", ["collectives/engines/_tcp_pair_c.c"], extra_compile_args=FLAGS,
              optional=True),
    Extension("collectives._fast_c", ["collectives/_fast_c.c"], depends=["collectives/_kept_run.h"],
              extra_compile_args=FLAGS, optional=True),
])
