"""The job secret is never readable by someone who can merely reach a store (issue 16,
security; acceptance case 26): under a torchrun-style environment our ranks meet in
torch's TCPStore, which has no authentication, yet a client that reads every key of it
during a real job cannot complete our data-plane handshake. Jobs on several hosts that
meet in such a store need COLLECTIVES_SECRET (or an explicit, warned insecure opt-in)."""

from __future__ import annotations

import datetime
import hashlib
import hmac
import logging
import os
import socket
import threading
from pathlib import Path
from typing import Any

import pytest

from collectives import data_key
from collectives._handshake import PURPOSE_DATA, client_handshake
from collectives.config import Config
from collectives.connect import connect
from collectives.errors import AuthenticationError, InvalidArgumentError
from collectives.store import HashStore
from faults_jobs import Job, base_env

pytestmark = pytest.mark.multiprocess


def _candidate_keys(values: dict[str, bytes]) -> list[bytes]:
    """Every key an attacker could make of what the store holds, the way we derive ours."""
    keys = []
    for value in values.values():
        keys += [value, hashlib.sha256(value).digest()]
        for salt in values.values():
            keys.append(hmac.new(value, b"collectives data key v1" + salt, hashlib.sha256).digest())
        keys.append(hmac.new(b"", b"collectives data key v1" + value, hashlib.sha256).digest())
    return keys


def _as_other_user_can_open(path: str) -> bool:
    """Whether uid ``nobody`` (a forked child that dropped to it) can open ``path``."""
    pid = os.fork()
    if pid == 0:  # the child: drop to nobody, try, report through the exit status
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            with open(path, "rb"):
                os._exit(0)
        except PermissionError:
            os._exit(1)
        except BaseException:
            os._exit(2)
    status = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    assert status in (0, 1), f"the child failed otherwise (exit {status})"
    return status == 0


def test_a_client_that_reads_the_whole_torch_store_cannot_join_the_data_plane(tmp_path: Path) -> None:
    torch_dist = pytest.importorskip("torch.distributed")
    env = base_env(COLLECTIVES_TRANSPORT="tcp", FAULTS_HOLD_RANK="0", COLLECTIVES_DEBUG="DEBUG")
    job = Job(tmp_path, 2, "torchrun-style", env)
    try:
        job.pids()
        job.wait_file("holding-0")  # rank 1 now waits for rank 0 on its data listener
        spy = torch_dist.TCPStore("127.0.0.1", job.master_port, is_master=False, wait_for_workers=False,
                                  timeout=datetime.timedelta(seconds=30))
        spy.wait(["collectives/1/tcp/addr/1"])
        names = spy.list_keys()
        values = {name: bytes(spy.get(name)) for name in names}
        assert "collectives/1/data/salt" in values and "collectives/1/data/secret-file" in values, sorted(values)
        host, _, port = values["collectives/1/tcp/addr/1"].decode().rpartition(":")
        listener = (host, int(port))
        accepted = []
        for key in _candidate_keys(values):  # claim to be rank 0, the rank it waits for
            with socket.create_connection(listener) as sock:
                try:
                    client_handshake(sock, key, PURPOSE_DATA, 0, timeout=10)
                    accepted.append(key)
                except AuthenticationError:
                    pass
        secret_file = values["collectives/1/data/secret-file"].decode()
        st = os.stat(secret_file)
        mode, dir_mode = st.st_mode & 0o777, os.stat(os.path.dirname(secret_file)).st_mode & 0o777
        other_user_reads = _as_other_user_can_open(secret_file) if os.geteuid() == 0 else None
        # control: the file's secret (which only this user can read) passes the MAC check; as
        # rank 7, which rank 1 does not expect, it is still turned away, and the log says why
        with open(secret_file, "rb") as f:
            real = hmac.new(f.read(), b"collectives data key v1" + values["collectives/1/data/salt"],
                            hashlib.sha256).digest()
        with socket.create_connection(listener) as sock, pytest.raises(AuthenticationError):
            client_handshake(sock, real, PURPOSE_DATA, 7, timeout=10)
        (tmp_path / "hold-0").touch()
        results = job.finish()
    finally:
        job.kill()
    print(f"\nread {len(values)} keys of torch's store; {len(_candidate_keys(values))} keys made of them: "
          f"{len(accepted)} accepted")
    assert not accepted, "a key made of the store's contents passed the data-plane handshake"
    assert (mode, dir_mode) == (0o600, 0o700)
    if other_user_reads is not None:
        assert other_user_reads is False, "another user could read the job's secret file"
    assert not os.path.exists(os.path.dirname(secret_file)), "rank 0 left the secret file behind"
    assert all(r["ok"] for r in results), results
    rank1 = job.stderr()[1]
    assert "failed to prove the job secret" in rank1 and "claims rank 7" in rank1, rank1[-3000:]


class OpenStore(HashStore):
    """A store anyone could read, as torch's TCPStore is."""

    private = False


def _connect_world(configs: list[Config], store: Any) -> list[Any]:
    out: list[Any] = [None] * len(configs)

    def rank_main(rank: int) -> None:
        try:
            out[rank] = connect(rank, len(configs), store, configs[rank])
        except BaseException as exc:  # noqa: BLE001 - returned to the test
            out[rank] = exc

    threads = [threading.Thread(target=rank_main, args=(r,)) for r in range(len(configs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return out


@pytest.mark.parametrize("setting", ["none", "secret", "insecure"])
def test_ranks_on_two_hosts_over_an_open_store_need_a_secret(setting: str, caplog: pytest.LogCaptureFixture) -> None:
    extra = {"none": {}, "secret": {"secret": "s3cret"}, "insecure": {"insecure": True}}[setting]
    configs = [Config(hostname=f"host{r}", timeout=20.0, socket_addr="127.0.0.1", **extra) for r in range(2)]
    with caplog.at_level(logging.WARNING, logger="collectives"):
        comms = _connect_world(configs, OpenStore(timeout=20.0))
    try:
        if setting == "none":
            for result in comms:
                assert isinstance(result, InvalidArgumentError), result
                assert "COLLECTIVES_SECRET" in str(result) and "COLLECTIVES_INSECURE=1" in str(result)
            return
        assert all(not isinstance(c, BaseException) for c in comms), comms
        assert comms[0].transport_names == {1: "tcp"}
        warned = any("COLLECTIVES_INSECURE=1" in r.getMessage() for r in caplog.records)
        assert warned == (setting == "insecure")
    finally:
        for c in comms:
            if not isinstance(c, BaseException):
                c.close()


def test_a_secret_file_must_be_private_to_this_user(tmp_path: Path) -> None:
    path, value = data_key.write_secret_file()
    try:
        assert data_key.read_secret_file(path) == value
        os.chmod(path, 0o640)
        with pytest.raises(AuthenticationError, match="not a private"):
            data_key.read_secret_file(path)
        os.chmod(path, 0o600)
        os.chmod(os.path.dirname(path), 0o755)
        with pytest.raises(AuthenticationError, match="not a private"):
            data_key.read_secret_file(path)
    finally:
        data_key.remove_secret_file(path)
    planted = tmp_path / "collectives-secret-x"
    planted.mkdir(mode=0o700)
    (planted / "elsewhere").write_bytes(b"k" * 32)
    os.symlink(planted / "elsewhere", planted / "secret")
    with pytest.raises(AuthenticationError):  # a symbolic link is not followed
        data_key.read_secret_file(str(planted / "secret"))
    for bad in ("/etc/passwd", "relative/collectives-secret-x/secret", str(planted / "elsewhere")):
        with pytest.raises(AuthenticationError, match="not one of ours"):
            data_key.read_secret_file(bad)
