"""The key that TCP data connections prove, and where it comes from.

Rank 0 publishes a fresh random salt in the communicator's store; the key is
``HMAC-SHA256(job secret, label + salt)``. The salt makes every communicator's key its
own; the job secret is what keeps strangers out, so it must never be readable by someone
who can merely reach the store. It comes from, first match wins:

1. ``COLLECTIVES_SECRET`` (made by ``collectives-run``; set by hand for jobs on several
   hosts that meet in a store without authentication);
2. the store itself when it is *private* (:attr:`Store.private`: our authenticated TCP
   store, an in-process store, the MPI-bootstrapped one): only members can read the salt,
   so the salt alone is the key, as before;
3. on one host, a 32-byte secret file that rank 0 writes (mode 0600, in a fresh 0700
   directory of its user) and names in the store: a reader of the store learns the path,
   not the contents, and a writer of the store can only point the ranks at a file of their
   own user (the name, owner and mode are checked before it is read);
4. with ``COLLECTIVES_INSECURE=1``, nothing (a warning says that reading the store is
   then enough to join);
5. otherwise nothing can be trusted, and every rank raises a clear error.

Under torchrun, torch's TCPStore on ``MASTER_PORT`` has no authentication (anyone who
connects reads every key), so (3) or (1) is what protects the data plane there.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import shutil
import stat
import tempfile
from collections.abc import Callable

from .config import Config
from .errors import AuthenticationError, InvalidArgumentError
from .store import Store

logger = logging.getLogger("collectives")

SALT_KEY = "data/salt"
SECRET_FILE_KEY = "data/secret-file"
SECRET_BYTES = 32
SECRET_DIR_PREFIX = "collectives-secret-"
SECRET_FILE_NAME = "secret"
_LABEL = b"collectives data key v1"


def _derive(secret: bytes, salt: bytes) -> bytes:
    return hmac.new(secret, _LABEL + salt, hashlib.sha256).digest()


def write_secret_file() -> tuple[str, bytes]:
    """Make a fresh secret in a new 0700 directory (mode 0600 file); return its path and value."""
    value = secrets.token_bytes(SECRET_BYTES)
    directory = tempfile.mkdtemp(prefix=SECRET_DIR_PREFIX)  # 0700, unguessable name
    path = os.path.join(directory, SECRET_FILE_NAME)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, value)
    finally:
        os.close(fd)
    return path, value


def remove_secret_file(path: str) -> None:
    """Remove the file and its directory (what :func:`write_secret_file` made)."""
    shutil.rmtree(os.path.dirname(path), ignore_errors=True)


def _private_to_me(st: os.stat_result) -> bool:
    return st.st_uid == os.geteuid() and not st.st_mode & 0o077


def read_secret_file(path: str) -> bytes:
    """Read a secret file that rank 0 named, after checking that only our user could have
    made it: a directory named like ours, owned by us with no group or other access, and a
    regular 0600 file of exactly ``SECRET_BYTES`` bytes in it, no symbolic link on the way.

    Raises:
        AuthenticationError: the path is not such a file, or it cannot be read (another
            host or container: set ``COLLECTIVES_SECRET`` there).
    """
    directory, name = os.path.split(path)
    if (not os.path.isabs(path) or name != SECRET_FILE_NAME
            or not os.path.basename(directory).startswith(SECRET_DIR_PREFIX) or "\x00" in path):
        raise AuthenticationError(f"the store names {path!r} as the job's secret file, which is not one of ours")
    try:
        dst = os.lstat(directory)
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise AuthenticationError(
            f"cannot read the job's secret file {path} ({exc.strerror}): ranks on another host or in "
            "another container cannot; set COLLECTIVES_SECRET to the same random value on every rank"
        ) from None
    try:
        st = os.fstat(fd)
        if not (stat.S_ISDIR(dst.st_mode) and _private_to_me(dst) and stat.S_ISREG(st.st_mode)
                and _private_to_me(st) and st.st_size == SECRET_BYTES):
            raise AuthenticationError(
                f"the job's secret file {path} is not a private {SECRET_BYTES}-byte file of this user "
                "in a private directory; refusing to use it"
            )
        return os.read(fd, SECRET_BYTES)
    finally:
        os.close(fd)


def data_key(rank: int, store: Store, config: Config, hosts: list[str], timeout: float) -> tuple[bytes, Callable[[], None]]:
    """The key for this communicator's TCP data connections, and what to call once every
    rank has connected (rank 0 then removes the secret file it may have written).

    Collective over the ranks that meet in ``store`` (every rank calls it when TCP carries
    data between some of them). ``hosts`` are the ranks' host identities.

    Raises:
        InvalidArgumentError: the ranks span several hosts, the store is not private and
            no ``COLLECTIVES_SECRET`` is set (and ``COLLECTIVES_INSECURE`` is not).
        AuthenticationError: the secret file rank 0 named cannot be read or is not ours.
    """
    if rank == 0:
        store.set(SALT_KEY, secrets.token_bytes(SECRET_BYTES))
    salt = store.get(SALT_KEY, timeout)
    if config.secret:
        return _derive(config.secret.encode(), salt), _nothing
    if store.private:
        return _derive(b"", salt), _nothing
    if len(set(hosts)) == 1:
        if rank == 0:
            path, value = write_secret_file()
            store.set(SECRET_FILE_KEY, path.encode())
            return _derive(value, salt), lambda: remove_secret_file(path)
        path = store.get(SECRET_FILE_KEY, timeout).decode(errors="replace")
        return _derive(read_secret_file(path), salt), _nothing
    if config.insecure:
        if rank == 0:
            logger.warning(
                "COLLECTIVES_INSECURE=1: ranks on %d hosts meet in %s, which has no authentication, and no "
                "COLLECTIVES_SECRET is set: anyone who can read that store can join this job's data connections",
                len(set(hosts)), type(store).__name__,
            )
        return _derive(b"", salt), _nothing
    raise InvalidArgumentError(
        f"rank {rank}: the ranks run on {len(set(hosts))} hosts and meet in a store without authentication "
        f"({type(store).__name__}, e.g. torch's TCPStore on MASTER_PORT, which anyone who can reach it can "
        "read), so the data connections need a secret that is not in it: set COLLECTIVES_SECRET to the same "
        "random value on every rank (python -c 'import secrets; print(secrets.token_hex(32))'), or "
        "COLLECTIVES_INSECURE=1 to accept that anyone who can reach the store can join"
    )


def _nothing() -> None:
    return None
