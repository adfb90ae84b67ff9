"""torch's own distributed test base (torch.testing._internal.distributed.distributed_test)
run against the collectives backend. Not part of the regular suite (it takes tens of
minutes: every test spawns its ranks); run it explicitly:

    TORCH_SUITE_MODE=collectives WORLD_SIZE=2 python -m pytest tests/torch_backend/torch_suite.py -q
    TORCH_SUITE_MODE=gloo-gated  WORLD_SIZE=2 python -m pytest tests/torch_backend/torch_suite.py -q
    TORCH_SUITE_MODE=mpi-gated   WORLD_SIZE=2 python -m pytest tests/torch_backend/torch_suite.py -q -k all_to_all

Modes:

* ``collectives``: BACKEND=collectives. torch gates many tests on the backend's name (only
  gloo/nccl "support" timeouts, all_to_all, batch_isend_irecv, DDP...); those are skipped.
  We declare what we implement through torch's own switches (``DistTestCases``: ddp,
  subgroup, plugin).
* ``gloo-gated``: the tests are selected as for BACKEND=gloo, but every process group is
  created with the collectives backend. Tests of gloo-only features (sparse all_reduce,
  gloo's monitored_barrier) and tests that assert the backend is named "gloo" fail by
  construction; the rest exercise our backend with torch's expectations of gloo.
* ``mpi-gated``: the same with the tests selected as for BACKEND=mpi; meant for
  ``-k all_to_all``, the CPU all_to_all tests with uneven splits that torch runs for MPI only.
"""

from __future__ import annotations

import os
import sys
import tempfile

MODE = os.environ.setdefault("TORCH_SUITE_MODE", "collectives")
GATED_AS = {"gloo-gated": "gloo", "mpi-gated": "mpi"}.get(MODE)
os.environ["BACKEND"] = GATED_AS or "collectives"
os.environ.setdefault("WORLD_SIZE", "2")
os.environ.setdefault("TEMP_DIR", tempfile.mkdtemp(prefix="torch-suite-"))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

import collectives.torch_backend  # noqa: E402,F401 - registers the backend (also in spawned ranks)
from torch.testing._internal.common_distributed import DistTestCases  # noqa: E402

for feature in ("ddp", "subgroup", "plugin"):
    DistTestCases.backend_feature[feature].add("collectives")

from torch.testing._internal.distributed import distributed_test  # noqa: E402
from torch.testing._internal.distributed.distributed_test import DistributedTest, TestDistBackend  # noqa: E402

if GATED_AS is not None:
    _init = dist.init_process_group
    _new_group = dist.new_group

    def _init_collectives(*args, **kwargs):
        if args:
            kwargs.setdefault("backend", args[0])
            args = args[1:]
        if kwargs.get("backend") in (GATED_AS, "gloo", None):
            kwargs["backend"] = "collectives"
        return _init(*args, **kwargs)

    def _new_group_collectives(*args, **kwargs):
        if kwargs.get("backend") in (GATED_AS, "gloo", None):
            kwargs["backend"] = "collectives"
        return _new_group(*args, **kwargs)

    dist.init_process_group = _init_collectives
    dist.new_group = _new_group_collectives
    distributed_test.dist.init_process_group = _init_collectives


class TestCollectivesBackend(TestDistBackend, DistributedTest._DistTestBase):
    def setUp(self):
        super().setUp()
        # TORCH_SUITE_START=spawn re-imports torch in every rank of every test (slow);
        # fork is what torch's own test_distributed_fork used
        if os.environ.get("TORCH_SUITE_START", "fork") == "spawn":
            self._spawn_processes()
        else:
            self._start_processes(torch.multiprocessing.get_context("fork").Process)


if __name__ == "__main__":
    from torch.testing._internal.common_utils import run_tests

    sys.exit(run_tests())
