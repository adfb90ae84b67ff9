"""The simulator: our schedules on a modelled machine of up to thousands of ranks.

``cluster`` builds the machine (this machine's transports from a cost profile, or a cluster
of 8-GPU NVLink nodes on 400 Gb/s NICs in a two-level fat tree), ``predict`` prices every
algorithm on it with the tuner's replay (``collectives.tuning``), and ``python -m
collectives.sim`` prints the table. See docs/simulation.md.
"""
