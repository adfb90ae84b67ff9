"""A store in a directory on a shared file system: one file per key.

For jobs whose ranks share a file system but should not open a port (or cannot reach one).
Values are written to a temporary file and renamed into place, so a reader sees either the
old or the new value, never half of one. Read-modify-write operations (``add``,
``compare_set``) and every other mutation hold an ``flock`` on ``.lock`` in the directory,
so processes and threads agree. ``get`` polls with short, growing sleeps.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import os
import tempfile
import time
from collections.abc import Iterator, Sequence

from .base import DEFAULT_TIMEOUT, Store

_POLL_MIN = 0.001
_POLL_MAX = 0.05


class FileStore(Store):
    """Keys as files under ``path`` (created if missing, mode 0700)."""

    def __init__(self, path: str | os.PathLike[str], timeout: float = DEFAULT_TIMEOUT) -> None:
        self.path = os.fspath(path)
        self.timeout = timeout
        os.makedirs(self.path, mode=0o700, exist_ok=True)
        self._lock_path = os.path.join(self.path, ".lock")

    def __repr__(self) -> str:
        return f"<FileStore {self.path}>"

    def _file(self, key: str) -> str:
        """A file name for ``key`` that is safe whatever characters the key holds."""
        encoded = base64.urlsafe_b64encode(key.encode()).decode()
        if len(encoded) <= 200:
            return os.path.join(self.path, "k_" + encoded)
        return os.path.join(self.path, "h_" + hashlib.sha256(key.encode()).hexdigest())

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _read(self, key: str) -> bytes | None:
        try:
            with open(self._file(key), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def _write(self, key: str, value: bytes) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.path, prefix=".tmp_")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(value)
            os.replace(tmp, self._file(key))
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def set(self, key: str, value: bytes) -> None:
        with self._locked():
            self._write(key, bytes(value))

    def get(self, key: str, timeout: float | None = None) -> bytes:
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        delay = _POLL_MIN
        while True:
            value = self._read(key)
            if value is not None:
                return value
            left = deadline - time.monotonic()
            if left <= 0:
                raise self._timeout_error([key], timeout)
            time.sleep(min(delay, left))
            delay = min(delay * 2, _POLL_MAX)

    def add(self, key: str, amount: int) -> int:
        with self._locked():
            value = int(self._read(key) or b"0") + amount
            self._write(key, str(value).encode())
            return value

    def compare_set(self, key: str, expected: bytes, desired: bytes) -> bytes:
        with self._locked():
            current = self._read(key)
            if current == expected or (current is None and expected == b""):
                self._write(key, bytes(desired))
                return bytes(desired)
            return current if current is not None else b""

    def check(self, keys: Sequence[str]) -> bool:
        return all(os.path.exists(self._file(k)) for k in keys)

    def delete(self, key: str) -> bool:
        with self._locked():
            try:
                os.unlink(self._file(key))
                return True
            except FileNotFoundError:
                return False
