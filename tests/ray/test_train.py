"""Ray Train: ``TorchTrainer(..., torch_config=TorchConfig(backend="collectives"))`` trains
a DDP model on our torch backend, and the weights are those of averaged gradients."""

from __future__ import annotations

import pytest
from ray_scripts import run_ray_script

pytestmark = [pytest.mark.ray, pytest.mark.slow]



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
    workers = run_ray_script("train_ddp.py", timeout=300, prefix="crt-")
    assert [w["backend"] for w in workers] == ["collectives", "collectives"]
    assert workers[0]["params"] == workers[1]["params"]  # DDP keeps the replicas equal
    want = _reference(3)
    for got, expected in zip(workers[0]["params"], want, strict=True):
        assert got == pytest.approx(expected, rel=1e-5, abs=1e-6)
