"""Rendezvous stores: where ranks meet before they talk."""

from .base import DEFAULT_TIMEOUT, PrefixStore, Store
from .hash_store import HashStore

__all__ = ["DEFAULT_TIMEOUT", "HashStore", "PrefixStore", "Store"]
