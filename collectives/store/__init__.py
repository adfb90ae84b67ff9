"""Rendezvous stores: where ranks meet before they talk."""

from .base import DEFAULT_TIMEOUT, PrefixStore, Store
from .file_store import FileStore
from .hash_store import HashStore
from .mpi_store import MPIStore
from .tcp_store import TCPStore, TCPStoreServer

__all__ = ["DEFAULT_TIMEOUT", "FileStore", "HashStore", "MPIStore", "PrefixStore", "Store", "TCPStore", "TCPStoreServer"]
