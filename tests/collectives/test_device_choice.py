"""``init()`` chooses the path of device buffers (``collectives/devices.py``): cuda_ipc where
every peer's GPU allows it, staged through the host elsewhere, one INFO line per peer
saying which. On CPU the choice runs with ``COLLECTIVES_DEVICE=host`` (every rank "shares
one GPU": the host implementation of the device primitives)."""

from __future__ import annotations

import logging

import pytest

import collectives
from collectives.config import Config
from collectives.errors import InvalidArgumentError
from collectives.testing import run_world
from collectives.transports.device_cuda import visible_device

pytestmark = pytest.mark.multiprocess


class _Lines(logging.Handler):
    """Keeps the messages of the ``collectives`` logger (inherited by forked ranks)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def lines():
    logger = logging.getLogger("collectives")
    handler, level = _Lines(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


def _report(handler: _Lines):
    def fn(comm) -> tuple[bool, list[str]]:
        return comm._context.device is not None, [line for line in handler.lines if "device buffers" in line]
    return fn


def test_one_host_sharing_a_device_takes_cuda_ipc_and_info_says_so(lines):
    results = run_world(_report(lines), 3, "shm", timeout=60, device="host")
    for rank, (direct, said) in enumerate(results):
        assert direct
        peers = [p for p in range(3) if p != rank]
        for peer in peers:
            assert f"device buffers: {rank}[0] -> {peer}[0] via cuda_ipc (same GPU)" in said
        assert f"rank {rank}: device buffers stay on host: cuda_ipc to every peer" in said


def test_without_shared_windows_device_buffers_are_staged_and_info_says_why(lines):
    results = run_world(_report(lines), 2, "tcp", timeout=60, device="host")
    for rank, (direct, said) in enumerate(results):
        assert not direct
        assert f"rank {rank}: device buffers are staged through host memory (transport=tcp forced)" in said


def test_off_and_no_device_leave_the_device_path_out(lines):
    for direct, said in run_world(_report(lines), 2, "shm", timeout=60, device="off"):
        assert not direct and not said
    if visible_device() is None:  # CI: no cupy or no GPU, so the default finds nothing to use
        for direct, _ in run_world(_report(lines), 2, "shm", timeout=60):
            assert not direct


def test_an_unknown_device_mode_is_refused_by_name():
    with pytest.raises(InvalidArgumentError, match="COLLECTIVES_DEVICE='gpu' is not one of auto, off, host"):
        Config.from_env({"COLLECTIVES_DEVICE": "gpu"})
    with pytest.raises(InvalidArgumentError, match="device: 'gpu' is not one of auto, off, host"):
        collectives.init(device="gpu")
