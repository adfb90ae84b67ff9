"""One local Ray cluster for the Ray tests of a run (``ray.init`` takes seconds), shut down after
the last of them (its daemons would otherwise run beside every later test), with the
actors importing this checkout of collectives."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = str(Path(__file__).resolve().parents[2])
HERE = str(Path(__file__).resolve().parent)  # actor classes defined in the test modules


@pytest.fixture(scope="package")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    ray = pytest.importorskip("ray")  # the optional extra; pinned in requirements-test.txt
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # else Ray 2.60 writes ~/.ray/auth_token
    # Workers are children of the raylet started here: they inherit this path.
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, HERE, os.environ.get("PYTHONPATH")) if p)
    if ray.is_initialized():
        yield ray
        return
    ray.init(num_cpus=4, include_dashboard=False, namespace="collectives-tests", log_to_driver=False,
             configure_logging=False)
    try:
        yield ray
    finally:
        ray.shutdown()
