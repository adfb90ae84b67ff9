"""Object collectives on the torch backend decode with the safe codec: a hostile peer's
pickle does nothing, plain data round-trips, and torch's own groups still pickle
(issue 16, security; acceptance case 27)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

pytestmark = pytest.mark.multiprocess

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_peers_malicious_pickle_does_nothing_by_default(tmp_path: Path) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COLLECTIVES_", "MASTER_", "RANK", "WORLD_SIZE"))}
    env.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", COLLECTIVES_TIMEOUT="60")
    procs = [subprocess.Popen([sys.executable, str(HERE / "faults_objects_worker.py"), str(r), "2", str(port),
                               str(tmp_path)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for r in range(2)]
    outs = []
    for p in procs:
        try:
            outs.append(p.communicate(timeout=120)[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
    assert all(p.returncode == 0 for p in procs), "\n".join(o[-3000:] for o in outs)
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2))
    # the attack: refused with our error, and the file __reduce__ would create is not there
    assert r0["attack_broadcast"].startswith("DecodeError: object codec: a peer sent a pickle"), r0
    assert r0["attack_recv"].startswith("DecodeError"), r0
    assert r0["file_after_attack"] is False
    assert not (tmp_path / "pwned").exists()
    # the same payload does run once rank 0 opts in to pickle: the test can fail
    assert r0["opt_in_recv"] == "ok" and r0["file_after_opt_in"] is True
    for result in (r0, r1):
        for op in ("all_gather_object", "broadcast_object_list", "gather_object", "scatter_object_list",
                   "send_object_list", "gloo_pickles", "all_reduce_after"):
            assert result[op] is True, (op, result)
    assert r0["refuses_class"].startswith("InvalidTypeError: object codec: cannot send a __main__.Point"), r0
