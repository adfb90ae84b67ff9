"""Every torch.distributed operation on the collectives backend, against gloo, at 2 and 3 ranks.

One torchrun launch per world size runs all cases of tb_cases.py (the default group is
``init_process_group("collectives")``, env:// through torchrun's store; the reference is a
gloo group over the same ranks); each case is then reported here as its own test. The
launch (the ``launched`` fixture) runs test_torch_training.py's scenarios too.
"""

from __future__ import annotations

import pytest

from tb_cases import CASES

pytestmark = pytest.mark.multiprocess
WORLDS = [2, 3]


@pytest.mark.parametrize("world", WORLDS)
@pytest.mark.parametrize("name", list(CASES))
def test_op_matches_gloo(launched, world: int, name: str) -> None:
    per_rank, launch_output = launched(world, "ops")
    problems = []
    for rank, results in enumerate(per_rank):
        if name not in results:
            problems.append(f"rank {rank}: case did not run (the launch failed or hung)\n{launch_output}")
            continue
        problems += [f"rank {rank}: {p}" for p in results[name]["problems"]]
        if not results[name]["checks"] and name not in ("identity", "monitored_barrier_ok"):
            problems.append(f"rank {rank}: the case compared nothing")
    assert not problems, "\n".join(problems)
