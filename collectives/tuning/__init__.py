"""The cost model and the tuner: what each algorithm is predicted to cost, and the choice.

``profile`` holds the measured constants per transport (``collectives-tune`` writes them;
``COLLECTIVES_TUNE_FILE`` names the file, else the built-in one), ``machine`` models hosts,
links and switches, ``events`` replays the schedules on such a machine, and ``tuner``
prices every algorithm and picks the cheapest. Below ``plans/``: it knows schedules
(``algorithms/``), never transports or the communicator.
"""
