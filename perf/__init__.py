"""nccl-tests-compatible benchmarks for the ``collectives`` library.

Commands ``all_reduce_perf``, ``all_gather_perf``, ``reduce_scatter_perf``,
``broadcast_perf``, ``reduce_perf``, ``alltoall_perf``, ``alltoallv_perf``, ``sendrecv_perf``,
``gather_perf``, ``scatter_perf``, ``hypercube_perf`` and ``barrier_perf`` (perf.cli), with
nccl-tests' flags and output layout; see perf/README.md.
"""
