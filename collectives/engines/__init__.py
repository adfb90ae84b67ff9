"""How plans run: the schedule executor and the shared-window engine.

``executor``: runs a schedule (``collectives.algorithms``) over the channels of the
transports. ``direct`` and ``small``: one-copy algorithms and small-message plans over
shared windows and single-copy reads of peers' memory. ``windows``: the shared windows of
one communicator, made collectively on first use. ``call``: the operation under way,
which every wait names when it times out.
"""
