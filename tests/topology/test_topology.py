"""Topology: parsing recorded nvidia-smi matrices, JSON, discovery and the transport choice.

The fixtures are written by hand in the layout nvidia-smi prints (tabs, " X " diagonal,
empty cell before GPU NUMA ID, NIC rows without affinity, legends), modelled on published
outputs of such machines; none was captured on the machine it describes. NVML is
exercised through a stand-in module built from the same fixtures, and nvidia-smi through
a stand-in script on PATH: both check our reading of those interfaces, not the real ones,
which a GPU session must confirm.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import itertools
import json
import os
import shutil
import stat
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest

from collectives.errors import InvalidArgumentError
from collectives.topology import (
    ASSUMED_PEER_ACCESS,
    EMPTY,
    Gpu,
    HostTopology,
    Link,
    LinkKind,
    describe,
    parse_nvidia_smi,
    select_transport,
)
from collectives.topology import discover as discover_module
from collectives.topology.discover import ENV_TOPO_FILE, discover, dump, from_nvml, load, main

FIXTURES = Path(__file__).parent / "fixtures"
NAMES = ["dgx_h100_nvswitch", "pcie_4gpu", "nvlink_pairs", "single_gpu"]


def fixture_text(name: str) -> str:
    return (FIXTURES / f"{name}.txt").read_text()


def topo(name: str) -> HostTopology:
    return parse_nvidia_smi(fixture_text(name), source=name)


def pcie_with_p2p() -> HostTopology:
    return parse_nvidia_smi(fixture_text("pcie_4gpu") + fixture_text("pcie_4gpu_p2p_r"))


def same_host(a: int, b: int, topology: HostTopology | None) -> str:
    return select_transport(
        0, 1, my_host="h", peer_host="h", device_buffers=True, my_gpu=a, peer_gpu=b, topology=topology
    ).transport


# -- parsing --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "count", "pair", "link"),
    [
        ("dgx_h100_nvswitch", 8, (0, 7), "NV18"),
        ("dgx_h100_nvswitch", 8, (5, 2), "NV18"),
        ("pcie_4gpu", 4, (0, 1), "PIX"),
        ("pcie_4gpu", 4, (2, 3), "NODE"),
        ("pcie_4gpu", 4, (1, 2), "SYS"),
        ("nvlink_pairs", 4, (2, 3), "NV4"),
        ("nvlink_pairs", 4, (0, 3), "PXB"),
    ],
    ids=lambda v: str(v).replace(" ", ""),
)
def test_parse_counts_gpus_and_reads_links(name: str, count: int, pair: tuple[int, int], link: str) -> None:
    t = topo(name)
    assert t.num_gpus == count
    assert str(t.link(*pair)) == link
    assert t.link(pair[0], pair[0]) == Link(LinkKind.X)


def test_nvswitch_every_pair_is_nv18_and_nics_are_skipped() -> None:
    t = topo("dgx_h100_nvswitch")
    assert len(t.links) == 8 * 7
    assert set(t.links.values()) == {Link(LinkKind.NV, 18)}
    assert [g.numa_node for g in t.gpus] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert t.peer_access == {}  # topo -m alone records no P2P status


def test_single_gpu_has_no_pairs() -> None:
    t = topo("single_gpu")
    assert (t.num_gpus, dict(t.links), t.gpus[0].numa_node) == (1, {}, 0)


def test_old_layout_without_gpu_numa_id_column() -> None:
    assert [g.numa_node for g in topo("nvlink_pairs").gpus] == [0, 0, 0, 0]


def test_p2p_matrix_after_topo_matrix_records_peer_access() -> None:
    t = pcie_with_p2p()
    assert t.peer_access[(0, 1)] is True
    assert t.peer_access[(3, 2)] is True
    assert t.peer_access[(0, 2)] is False
    assert len(t.peer_access) == 12


def test_two_p2p_matrices_combine_with_and() -> None:
    write = fixture_text("pcie_4gpu_p2p_r").replace(" GPU0\tX\tOK", " GPU0\tX\tNS")
    t = parse_nvidia_smi(fixture_text("pcie_4gpu") + fixture_text("pcie_4gpu_p2p_r") + write)
    assert t.peer_access[(0, 1)] is False
    assert t.peer_access[(1, 0)] is True


def test_spaces_and_terminal_escapes_read_like_tabs() -> None:
    text = fixture_text("dgx_h100_nvswitch")
    header, rest = text.split("\n", 1)
    mangled = "\x1b[4m" + header.replace("\t", "    ") + "\x1b[0m\n" + rest.replace("\t", "  ")
    assert parse_nvidia_smi(mangled, source="x") == parse_nvidia_smi(text, source="x")


def test_legacy_soc_and_mlx5_columns() -> None:
    text = "\tGPU0\tGPU1\tmlx5_0\tCPU Affinity\nGPU0\t X \tSOC\tPHB\t0-11\nGPU1\tSOC\t X \tSOC\t12-23\nmlx5_0\tPHB\tSOC\t X \t\n"
    t = parse_nvidia_smi(text)
    assert t.link(0, 1) == Link(LinkKind.SYS)
    assert t.gpus[0].numa_node is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no matrix"),
        ("\tGPU0\tGPU1\nGPU0\t X \tFOO\nGPU1\tFOO\t X \n", "line 2"),
        ("\tGPU0\tGPU1\nGPU0\t X \tNV\nGPU1\tNV\t X \n", "link count"),
        ("\tGPU0\tGPU1\nGPU0\tPIX\tPIX\nGPU1\tPIX\t X \n", "not X"),
        ("\tGPU0\tGPU1\nGPU0\t X \tPIX\n", "rows for GPUs [0]"),
        ("\tGPU0\tGPU1\nGPU0\t X \nGPU1\tPIX\t X \n", "1 cells for 2 columns"),
        (" \tGPU0\tGPU1\t\n GPU0\tX\tOK\t\n GPU1\tOK\tX\t\n", "P2P matrix must come after"),
    ],
    ids=["empty", "unknown-cell", "nv-without-count", "bad-diagonal", "missing-row", "short-row", "p2p-only"],
)
def test_malformed_matrices_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_nvidia_smi(text)


@pytest.mark.parametrize(
    ("text", "kind", "count"), [("NV18", LinkKind.NV, 18), ("nv4", LinkKind.NV, 4), ("PXB", LinkKind.PXB, 0)]
)
def test_link_parse_and_str(text: str, kind: LinkKind, count: int) -> None:
    link = Link.parse(text)
    assert (link.kind, link.nvlinks, str(link)) == (kind, count, text.upper())


def test_link_rejects_count_on_pcie() -> None:
    with pytest.raises(InvalidArgumentError):
        Link(LinkKind.PIX, 2)


# -- model and JSON -------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_json_round_trip(name: str) -> None:
    t = topo(name)
    assert HostTopology.from_json(t.to_json()) == t


def test_json_round_trip_keeps_peer_access_and_ids(tmp_path: Path) -> None:
    t = pcie_with_p2p()
    t = dataclasses.replace(
        t, gpus=(dataclasses.replace(t.gpus[0], uuid="GPU-a", pci_bus_id="0000:18:00.0"), *t.gpus[1:])
    )
    dump(t, tmp_path / "t.json")
    back = load(tmp_path / "t.json")
    assert back == t and back.peer_access[(1, 3)] is False and back.gpus[0].uuid == "GPU-a"
    data = json.loads((tmp_path / "t.json").read_text())
    assert data["links"][0][:2] == ["X", "PIX"] and data["peer_access"][0][0] is None


@pytest.mark.parametrize(
    "text",
    [
        '{"format": "other"}',
        "[1, 2]",
        "{not json",
        '{"format": "collectives.topology/1", "gpus": [{"index": 0}], "links": [["X", "X"]]}',
    ],
    ids=["format", "not-object", "not-json", "ragged"],
)
def test_bad_json_is_rejected(text: str) -> None:
    with pytest.raises(InvalidArgumentError):
        HostTopology.from_json(text)


def test_topology_checks_indices_and_pairs() -> None:
    with pytest.raises(InvalidArgumentError, match="index 1"):
        HostTopology((Gpu(1),))
    with pytest.raises(InvalidArgumentError, match="pair"):
        HostTopology((Gpu(0), Gpu(1)), {(0, 2): Link(LinkKind.PIX)})


def test_index_of_finds_gpu_by_uuid_or_any_bus_id_spelling() -> None:
    t = HostTopology((Gpu(0, uuid="GPU-a", pci_bus_id="0000:18:00.0"), Gpu(1, uuid="GPU-b", pci_bus_id="0000:3b:00.0")))
    assert t.index_of(uuid="GPU-b") == 1
    assert t.index_of(pci_bus_id="00000000:3B:00.0") == 1
    assert t.index_of(pci_bus_id="0000:99:00.0") is None


def test_summary_counts_pairs() -> None:
    assert topo("nvlink_pairs").summary() == "4 GPUs (nvlink_pairs): NV4 x2, PXB x4"


# -- selection ------------------------------------------------------------------------------


@pytest.mark.parametrize(("a", "b"), list(itertools.permutations(range(8), 2)), ids=lambda v: str(v))
def test_nvswitch_every_pair_uses_cuda_ipc(a: int, b: int) -> None:
    assert same_host(a, b, topo("dgx_h100_nvswitch")) == "cuda_ipc"


@pytest.mark.parametrize(
    ("pair", "recorded", "expected"),
    [
        ((0, 1), False, "cuda_ipc"),  # PIX: P2P assumed below the host bridge
        ((2, 3), False, "shm_staged"),  # NODE: not assumed through the CPU
        ((0, 2), False, "shm_staged"),  # SYS
        ((0, 1), True, "cuda_ipc"),  # PIX, P2P OK
        ((3, 2), True, "cuda_ipc"),  # NODE, but P2P status recorded OK
        ((1, 3), True, "shm_staged"),  # SYS, CNS
    ],
    ids=["pix", "node", "sys", "pix-ok", "node-ok", "sys-cns"],
)
def test_pcie_choice(pair: tuple[int, int], recorded: bool, expected: str) -> None:
    t = pcie_with_p2p() if recorded else topo("pcie_4gpu")
    assert same_host(*pair, t) == expected


def test_recorded_no_overrides_a_link_that_would_be_assumed() -> None:
    t = dataclasses.replace(topo("pcie_4gpu"), peer_access={(0, 1): False, (1, 0): False})
    assert same_host(0, 1, t) == "shm_staged"


def test_one_way_peer_access_is_no_peer_access_both_ways() -> None:
    t = dataclasses.replace(topo("pcie_4gpu"), peer_access={(0, 1): True, (1, 0): False})
    assert (same_host(0, 1, t), same_host(1, 0, t)) == ("shm_staged", "shm_staged")


@pytest.mark.parametrize(("pair", "expected"), [((0, 1), "cuda_ipc"), ((1, 2), "cuda_ipc")], ids=["nv4", "pxb"])
def test_nvlink_bridges(pair: tuple[int, int], expected: str) -> None:
    assert same_host(*pair, topo("nvlink_pairs")) == expected


@pytest.mark.parametrize("name", NAMES)
def test_choice_is_the_same_from_both_ends(name: str) -> None:
    t = topo(name)
    pairs = list(itertools.combinations(range(t.num_gpus), 2))
    assert [same_host(a, b, t) for a, b in pairs] == [same_host(b, a, t) for a, b in pairs]


def test_both_ends_agree_even_on_a_lopsided_record() -> None:
    t = HostTopology((Gpu(0), Gpu(1)), {(0, 1): Link(LinkKind.PIX), (1, 0): Link(LinkKind.SYS)})
    assert same_host(0, 1, t) == same_host(1, 0, t)


@pytest.mark.parametrize(("device", "expected"), [(True, "tcp_staged"), (False, "tcp")])
def test_other_host(device: bool, expected: str) -> None:
    plan = select_transport(
        2,
        5,
        my_host="a",
        peer_host="b",
        device_buffers=device,
        my_gpu=0,
        peer_gpu=1,
        topology=topo("dgx_h100_nvswitch"),
    )
    assert plan.transport == expected


def test_host_buffers_on_one_host_use_shm() -> None:
    plan = select_transport(0, 1, my_host="h", peer_host="h", my_gpu=0, peer_gpu=1, topology=topo("dgx_h100_nvswitch"))
    assert (plan.transport, plan.my_gpu, plan.link) == ("shm", None, None)


@pytest.mark.parametrize(
    ("a", "b", "topology", "expected"),
    [
        (0, 0, topo("single_gpu"), "cuda_ipc"),
        (0, 1, None, "shm_staged"),
        (0, 1, EMPTY, "shm_staged"),
        (3, 9, topo("pcie_4gpu"), "shm_staged"),
    ],
    ids=["same-gpu", "no-topology", "empty-topology", "gpu-not-in-topology"],
)
def test_unknowns_fall_back_to_staging(a: int, b: int, topology: HostTopology | None, expected: str) -> None:
    assert same_host(a, b, topology) == expected


@pytest.mark.parametrize(("my_gpu", "peer_gpu"), [(None, 1), (0, None), (-1, 0)])
def test_device_buffers_need_gpu_indices(my_gpu: int | None, peer_gpu: int | None) -> None:
    with pytest.raises(InvalidArgumentError, match="GPU index"):
        select_transport(0, 1, my_host="h", peer_host="h", device_buffers=True, my_gpu=my_gpu, peer_gpu=peer_gpu)


def test_every_link_kind_has_an_assumption() -> None:
    assert set(ASSUMED_PEER_ACCESS) == set(LinkKind)


@pytest.mark.parametrize(
    ("kwargs", "text"),
    [
        (
            {"my_gpu": 0, "peer_gpu": 1, "topology": "dgx_h100_nvswitch"},
            "0[0] -> 1[1] via cuda_ipc (NV18; P2P assumed from the link, no status recorded)",
        ),
        ({"my_gpu": 1, "peer_gpu": 3, "topology": "pcie_p2p"}, "0[1] -> 1[3] via shm_staged (SYS; P2P not supported)"),
        ({"my_gpu": 3, "peer_gpu": 2, "topology": "pcie_p2p"}, "0[3] -> 1[2] via cuda_ipc (NODE; P2P status OK)"),
        ({"device_buffers": False}, "0[cpu] -> 1[cpu] via shm (same host)"),
        ({"peer_host": "other", "my_gpu": 0, "peer_gpu": 2}, "0[0] -> 1[2] via tcp_staged (other host)"),
    ],
    ids=["nvswitch", "sys", "node-ok", "host", "remote"],
)
def test_describe(kwargs: dict[str, Any], text: str) -> None:
    args: dict[str, Any] = {"my_host": "h", "peer_host": "h", "device_buffers": True}
    args.update(kwargs)
    name = args.get("topology")
    if name is not None:
        args["topology"] = pcie_with_p2p() if name == "pcie_p2p" else topo(name)
    assert describe(select_transport(0, 1, **args)) == text


# -- discovery ------------------------------------------------------------------------------


def test_discover_on_this_machine_finds_no_gpus_without_raising() -> None:
    if importlib.util.find_spec("pynvml") is not None or shutil.which("nvidia-smi"):
        pytest.skip("this machine has NVIDIA tooling; a GPU session checks discovery there")
    env = {k: v for k, v in os.environ.items() if k != ENV_TOPO_FILE}
    assert discover(env) is EMPTY


@pytest.fixture
def no_pynvml(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # `import pynvml` raises ImportError


def fake_nvidia_smi(tmp_path: Path, body: str) -> dict[str, str]:
    script = tmp_path / "nvidia-smi"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return {"PATH": str(tmp_path)}


@pytest.mark.usefixtures("no_pynvml")
def test_discover_reads_nvidia_smi(tmp_path: Path) -> None:
    env = fake_nvidia_smi(
        tmp_path,
        f'case "$*" in\n'
        f'  "topo -m") cat "{FIXTURES}/pcie_4gpu.txt";;\n'
        f'  "topo -p2p r") cat "{FIXTURES}/pcie_4gpu_p2p_r.txt";;\n'
        f'  --query-gpu*) echo "0, GPU-0, NVIDIA L40S, 00000000:18:00.0"; echo "2, GPU-2, NVIDIA L40S, 00000000:AF:00.0";;\n'
        f"  *) exit 2;;\nesac\n",
    )
    t = discover(env)
    assert t.num_gpus == 4 and str(t.link(2, 3)) == "NODE" and t.peer_access[(2, 3)] is True
    assert (t.gpus[2].uuid, t.gpus[2].name, t.gpus[2].pci_bus_id) == ("GPU-2", "NVIDIA L40S", "0000:af:00.0")
    assert t.gpus[1].uuid is None and t.gpus[2].numa_node == 1


@pytest.mark.usefixtures("no_pynvml")
@pytest.mark.parametrize(
    "body",
    [
        'echo "NVIDIA-SMI has failed because it couldn\'t communicate with the NVIDIA driver."; exit 9\n',
        'echo "No devices were found"; exit 6\n',
        "echo garbage\n",
        "exec sleep 30\n",
    ],
    ids=["no-driver", "no-devices", "garbage", "hangs"],
)
def test_discover_survives_a_failing_nvidia_smi(tmp_path: Path, body: str, monkeypatch: pytest.MonkeyPatch) -> None:
    env = fake_nvidia_smi(tmp_path, body)
    real = discover_module.from_nvidia_smi
    monkeypatch.setattr(discover_module, "from_nvidia_smi", lambda e: real(e, timeout=0.5))
    assert discover(env) is EMPTY


def test_discover_without_nvml_or_nvidia_smi(no_pynvml: None, tmp_path: Path) -> None:
    assert discover({"PATH": str(tmp_path)}) is EMPTY


@pytest.mark.parametrize("name", ["pcie_4gpu", "json"])
def test_topo_file_env_wins(tmp_path: Path, name: str) -> None:
    path = FIXTURES / "pcie_4gpu.txt"
    if name == "json":
        path = tmp_path / "t.json"
        dump(topo("dgx_h100_nvswitch"), path)
    t = discover({ENV_TOPO_FILE: str(path), "PATH": ""})
    assert t.num_gpus == (8 if name == "json" else 4)


@pytest.mark.parametrize("content", [None, "not a matrix\n"], ids=["missing", "unparsable"])
def test_topo_file_that_cannot_be_read_is_an_error(tmp_path: Path, content: str | None) -> None:
    path = tmp_path / "topo.txt"
    if content is not None:
        path.write_text(content)
    with pytest.raises(InvalidArgumentError, match="topo.txt"):
        discover({ENV_TOPO_FILE: str(path)})


def test_main_prints_json_that_loads_back(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    path = str(FIXTURES / "nvlink_pairs.txt")
    monkeypatch.setenv(ENV_TOPO_FILE, path)
    assert main([]) == 0
    assert HostTopology.from_json(capsys.readouterr().out) == dataclasses.replace(topo("nvlink_pairs"), source=path)


# -- NVML, through a stand-in module ---------------------------------------------------------


class FakeNvml:
    """Answers the NVML calls discovery makes, from a topology (the way a driver would).

    ``switch=True``: every NV# pair is reached through NVSwitches (each GPU's links end on
    a switch); else NV# links go straight to the peer GPU. ``device_types=False`` models an
    older driver without nvmlDeviceGetNvLinkRemoteDeviceType.
    """

    NVML_NVLINK_MAX_LINKS = 18
    LEVELS: ClassVar[dict[LinkKind, int]] = {
        LinkKind.PIX: 10,
        LinkKind.PXB: 20,
        LinkKind.PHB: 30,
        LinkKind.NODE: 40,
        LinkKind.SYS: 50,
    }

    class NVMLError(Exception):
        pass

    def __init__(
        self,
        t: HostTopology,
        *,
        switch: bool = False,
        device_types: bool = True,
        p2p: dict[tuple[int, int, int], int] | None = None,
        init_error: bool = False,
    ) -> None:
        self.t, self.switch, self.device_types, self.p2p, self.init_error = (
            t,
            switch,
            device_types,
            p2p or {},
            init_error,
        )
        self.shut_down = False
        self.nvlinks: list[list[int | None]] = []  # per GPU: remote GPU index per link, None = switch
        for i in range(t.num_gpus):
            if switch:
                count = max((l.nvlinks for (a, _), l in t.links.items() if a == i), default=0)
                self.nvlinks.append([None] * count)
            else:
                self.nvlinks.append([j for (a, j), l in sorted(t.links.items()) if a == i for _ in range(l.nvlinks)])

    def bus(self, i: int) -> str:
        return f"00000000:{0x18 + 0x10 * i:02X}:00.0"

    def nvmlInit(self) -> None:
        if self.init_error:
            raise self.NVMLError("Driver Not Loaded")

    def nvmlShutdown(self) -> None:
        self.shut_down = True

    def nvmlDeviceGetCount(self) -> int:
        return self.t.num_gpus

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        return i

    def nvmlDeviceGetPciInfo(self, h: int) -> SimpleNamespace:
        return SimpleNamespace(busId=self.bus(h).encode())

    def nvmlDeviceGetUUID(self, h: int) -> str:
        return f"GPU-{h:04d}"

    def nvmlDeviceGetName(self, h: int) -> bytes:
        return b"NVIDIA H100 80GB HBM3"

    def nvmlDeviceGetNvLinkState(self, h: int, link: int) -> int:
        if link >= len(self.nvlinks[h]):
            raise self.NVMLError("Not Supported")
        return 1

    def nvmlDeviceGetNvLinkRemoteDeviceType(self, h: int, link: int) -> int:
        if not self.device_types:
            raise self.NVMLError("Function Not Found")
        return 2 if self.nvlinks[h][link] is None else 0

    def nvmlDeviceGetNvLinkRemotePciInfo(self, h: int, link: int) -> SimpleNamespace:
        remote = self.nvlinks[h][link]
        return SimpleNamespace(busId=(b"00000000:C0:00.0" if remote is None else self.bus(remote).encode()))

    def nvmlDeviceGetTopologyCommonAncestor(self, a: int, b: int) -> int:
        link = self.t.link(a, b)
        assert link is not None
        return 50 if link.is_nvlink else self.LEVELS[link.kind]

    def nvmlDeviceGetP2PStatus(self, a: int, b: int, index: int) -> int:
        assert isinstance(index, int), "pass the C enum value, not pynvml's tuple"
        return self.p2p.get((a, b, index), 0)


@pytest.mark.parametrize(
    ("name", "switch", "device_types"),
    [
        ("dgx_h100_nvswitch", True, True),
        ("dgx_h100_nvswitch", True, False),
        ("nvlink_pairs", False, True),
        ("pcie_4gpu", False, True),
    ],
    ids=["nvswitch", "nvswitch-old-driver", "nvlink-bridges", "pcie"],
)
def test_nvml_reproduces_the_recorded_links(name: str, switch: bool, device_types: bool) -> None:
    fake = FakeNvml(topo(name), switch=switch, device_types=device_types)
    t = from_nvml(fake)
    assert t is not None and fake.shut_down
    assert t.links == topo(name).links
    assert (t.gpus[1].uuid, t.gpus[1].pci_bus_id, t.source) == ("GPU-0001", "0000:28:00.0", "nvml")


def test_nvml_p2p_needs_read_and_write() -> None:
    # (a, b, 0=read / 1=write) -> status: 1 chipset not supported, 5 not supported, 6 unknown
    fake = FakeNvml(topo("pcie_4gpu"), p2p={(0, 2, 0): 1, (0, 3, 1): 5, (1, 2, 0): 6})
    t = from_nvml(fake)
    assert t is not None
    assert (t.peer_access[(0, 1)], t.peer_access[(0, 2)], t.peer_access[(0, 3)]) == (True, False, False)
    assert (1, 2) not in t.peer_access


@pytest.mark.usefixtures("no_pynvml")
def test_from_nvml_without_pynvml() -> None:
    assert from_nvml() is None


def test_discover_falls_through_when_nvml_cannot_start(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml(topo("pcie_4gpu"), init_error=True))
    assert discover({"PATH": str(tmp_path)}) is EMPTY


def test_discover_uses_pynvml_when_it_works(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml(topo("dgx_h100_nvswitch"), switch=True))
    assert discover({"PATH": str(tmp_path)}).summary() == "8 GPUs (nvml): NV18 x28"


def test_init_takes_the_per_pair_choice_and_says_it_at_debug_info(caplog: pytest.LogCaptureFixture) -> None:
    """connect() asks select_transport for every peer; COLLECTIVES_DEBUG=INFO prints one
    line per peer. Two ranks on 'host a' and one on 'host b', as threads of this process."""
    import logging
    import threading

    from collectives._init import connect
    from collectives.config import Config
    from collectives.store import HashStore

    store = HashStore()
    comms: dict[int, Any] = {}
    errors: list[BaseException] = []

    def rank_main(rank: int) -> None:
        config = Config(hostname="a" if rank < 2 else "b", debug="INFO", timeout=30.0, socket_addr="127.0.0.1")
        try:
            comms[rank] = connect(rank, 3, store, config)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    with caplog.at_level(logging.INFO, logger="collectives"):
        threads = [threading.Thread(target=rank_main, args=(r,)) for r in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    try:
        assert not errors, errors
        assert comms[0].transport_names == {1: "shm", 2: "tcp"}
        assert comms[2].transport_names == {0: "tcp", 1: "tcp"}
        text = caplog.text
        assert "0[cpu] -> 1[cpu] via shm (same host)" in text
        assert "0[cpu] -> 2[cpu] via tcp (other host)" in text
        assert "2[cpu] -> 1[cpu] via tcp (other host)" in text
    finally:
        for comm in comms.values():
            comm.close()
