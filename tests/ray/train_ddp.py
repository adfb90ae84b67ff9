"""Ray Train's ``TorchTrainer`` with ``TorchConfig(backend="collectives")``: a DDP model
trained by 2 workers on our torch backend, registered in every worker by Ray's
``worker_process_setup_hook``. Prints, as JSON, what each worker ended with. Run by
``test_train.py`` in a process of its own (its own cluster: the hook is set at ``ray.init``)."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import ray
from ray.train import RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer

STEPS = 3


def train_loop(config: dict[str, Any]) -> None:
    import torch
    import torch.distributed as dist
    from ray.train.torch import prepare_model

    torch.manual_seed(0)
    model = prepare_model(torch.nn.Linear(4, 1))  # DistributedDataParallel on CPU
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    rank = dist.get_rank()
    for _ in range(STEPS):
        loss = model(torch.full((8, 4), float(rank + 1))).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    params = [p.detach().flatten().tolist() for p in model.parameters()]
    Path(config["out"], f"rank{rank}.json").write_text(json.dumps({"backend": dist.get_backend(), "params": params}))


def main() -> None:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"worker_process_setup_hook": "collectives.torch_backend.register"})
    try:
        with tempfile.TemporaryDirectory() as out:
            trainer = TorchTrainer(train_loop, train_loop_config={"out": out},
                                   scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 1}),
                                   torch_config=TorchConfig(backend="collectives"),
                                   run_config=RunConfig(storage_path=str(Path(out, "results")), name="ddp"))
            trainer.fit()
            json.dump([json.loads(Path(out, f"rank{r}.json").read_text()) for r in range(2)], sys.stdout)
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
