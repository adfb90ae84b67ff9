"""Which addresses a group's store and TCP listeners take, by where its members run (no
cluster needed: the choice is made from the members' places)."""

from __future__ import annotations

from collectives.config import Config
from collectives.ray.group import _settings, store_address
from collectives.ray.member import Place

CONFIG = Config(timeout=5.0)


def test_one_address_stays_on_loopback() -> None:
    places = [Place("n1", "10.0.0.1", 1, None), Place("n2", "10.0.0.1", 2, None)]
    assert store_address(places) == ("127.0.0.1", False)
    assert _settings(CONFIG, "machine", places[1], False) == {"timeout": 5.0}
    assert _settings(CONFIG, "node", places[1], False) == {"timeout": 5.0, "hostname": "ray-node:n2"}


def test_several_addresses_use_each_node_address() -> None:
    places = [Place("n1", "10.0.0.1", 1, None), Place("n2", "10.0.0.2", 2, None)]
    assert store_address(places) == ("10.0.0.1", True)
    assert _settings(CONFIG, "machine", places[1], True) == {"timeout": 5.0, "socket_addr": "10.0.0.2"}


def test_collectives_socket_addr_in_an_actor_wins() -> None:
    places = [Place("n1", "10.0.0.1", 1, "192.168.0.1"), Place("n2", "10.0.0.2", 2, "192.168.0.2")]
    assert store_address(places) == ("192.168.0.1", True)
    assert "socket_addr" not in _settings(CONFIG, "machine", places[1], True)  # its own environment's
    assert _settings(Config(timeout=5.0, transport="tcp"), "machine", places[1], True)["transport"] == "tcp"
