"""Ray Train: ``TorchTrainer(..., torch_config=TorchConfig(backend="collectives"))`` trains
a DDP model on our torch backend, and the weights are those of averaged gradients."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.slow]

HERE = Path(__file__).resolve().parent


def _reference(steps: int) -> list[list[float]]:
    """The same model trained in one process on the mean of both workers' gradients."""
    import torch

    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(steps):
        grads = []
        for rank in range(2):
            model.zero_grad()
            model(torch.full((8, 4), float(rank + 1))).pow(2).mean().backward()
            grads.append([p.grad.clone() for p in model.parameters()])
        for p, g0, g1 in zip(model.parameters(), *grads, strict=True):
            p.grad = (g0 + g1) / 2
        opt.step()
    return [p.detach().flatten().tolist() for p in model.parameters()]


def test_torch_trainer_trains_ddp_on_the_collectives_backend() -> None:
    pytest.importorskip("torch")
    pytest.importorskip("ray.train")  # ray[train] (requirements-test.txt)
    tmp = tempfile.mkdtemp(prefix="crt-")  # short: Ray's socket paths must fit AF_UNIX's 107 bytes
    env = dict(os.environ, RAY_AUTH_MODE="disabled", RAY_TMPDIR=tmp,
               PYTHONPATH=os.pathsep.join(p for p in (str(HERE.parents[1]), os.environ.get("PYTHONPATH")) if p))
    try:
        done = subprocess.run([sys.executable, str(HERE / "train_ddp.py")], env=env, capture_output=True,
                              text=True, timeout=300)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    assert done.returncode == 0, done.stderr[-3000:]
    workers = json.loads(done.stdout)
    assert [w["backend"] for w in workers] == ["collectives", "collectives"]
    assert workers[0]["params"] == workers[1]["params"]  # DDP keeps the replicas equal
    want = _reference(3)
    for got, expected in zip(workers[0]["params"], want, strict=True):
        assert got == pytest.approx(expected, rel=1e-5, abs=1e-6)
