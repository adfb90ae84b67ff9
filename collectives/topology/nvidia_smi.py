"""Read the matrices that ``nvidia-smi topo -m`` and ``nvidia-smi topo -p2p r`` print.

``topo -m`` prints a header row (GPU0..GPUn, then NIC0.. or mlx5_0.. columns on hosts with
NICs, then CPU Affinity, NUMA Affinity and, on newer drivers, GPU NUMA ID), one row per GPU
and per NIC, and a legend. ``topo -p2p r`` prints the same kind of GPU x GPU matrix with P2P
statuses (OK, CNS, GNS, TNS, NS, DR, U) and its own legend. A text may hold the first
alone, or the first followed by one or more P2P matrices, as
``{ nvidia-smi topo -m; nvidia-smi topo -p2p r; } > topo.txt`` writes it; several P2P
matrices (read and write) are combined: a pair has peer access only if all say OK.

Cells are split on any whitespace, so tabs (what nvidia-smi writes), spaces (what a
copy from a terminal or a web page gives) and terminal underline escapes all read alike.
NIC rows and columns are skipped: only GPU to GPU cells matter to the transport choice.
"""

from __future__ import annotations

import re

from ..errors import InvalidArgumentError
from .model import Gpu, HostTopology, Link

# `nvidia-smi topo -p2p` statuses: OK, chipset / GPU / topology not supported, not
# supported, disabled by regkey; U (unknown) records nothing.
P2P_STATUS: dict[str, bool | None] = {
    "OK": True,
    "CNS": False,
    "GNS": False,
    "TNS": False,
    "NS": False,
    "DR": False,
    "U": None,
}

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_GPU = re.compile(r"GPU(\d+)$")
_AFFINITY_START = {"CPU", "NUMA", "GPU"}  # first words of "CPU Affinity", "NUMA Affinity", "GPU NUMA ID"
_AFFINITY_NAMES = ("CPU Affinity", "NUMA Affinity", "GPU NUMA ID")


class _Block:
    """One matrix: its column names, affinity column names, and (line number, tokens) rows."""

    def __init__(self, line_no: int, header: list[str]) -> None:
        self.line_no = line_no
        self.columns: list[str] = []
        rest = header
        while rest and rest[0] not in _AFFINITY_START:
            self.columns.append(rest[0])
            rest = rest[1:]
        joined = " ".join(rest)
        self.affinity = [name for name in _AFFINITY_NAMES if name in joined]
        self.rows: list[tuple[int, list[str]]] = []

    def gpu_columns(self) -> list[tuple[int, int]]:
        """(column position, GPU index) for the GPU columns."""
        found = []
        for position, name in enumerate(self.columns):
            match = _GPU.match(name)
            if match:
                found.append((position, int(match.group(1))))
        return found

    def gpu_rows(self) -> list[tuple[int, int, list[str]]]:
        """(line number, GPU index, tokens after the label) for the GPU rows, in order."""
        found = []
        for line_no, tokens in self.rows:
            match = _GPU.match(tokens[0])
            if match:
                found.append((line_no, int(match.group(1)), tokens[1:]))
        return found


def _is_cell(word: str) -> bool:
    if word.upper() in P2P_STATUS:
        return True
    try:
        Link.parse(word)
    except InvalidArgumentError:
        return False
    return True


def _is_header(tokens: list[str]) -> bool:
    # A header starts with GPU0; so does the GPU0 row, whose next word is a cell (its
    # diagonal, X), where the header's is a column name (GPU1, NIC0, CPU Affinity).
    return tokens[0] == "GPU0" and (len(tokens) == 1 or not _is_cell(tokens[1]))


def _blocks(text: str) -> list[_Block]:
    blocks: list[_Block] = []
    current: _Block | None = None
    for line_no, raw in enumerate(text.splitlines(), 1):
        tokens = _ANSI.sub("", raw).split()
        if not tokens or tokens[-1] == "Legend:":
            current = None  # a blank line or a legend ends a matrix
        elif _is_header(tokens):
            current = _Block(line_no, tokens)
            blocks.append(current)
        elif current is not None:
            current.rows.append((line_no, tokens))
    return blocks


def _gpu_cells(block: _Block, what: str) -> dict[tuple[int, int], tuple[int, str]]:
    """``(i, j) -> (line number, cell text)`` for every GPU pair of the block, checked square."""
    columns = block.gpu_columns()
    indices = [index for _, index in columns]
    if indices != list(range(len(indices))):
        raise InvalidArgumentError(
            f"{what}: line {block.line_no}: GPU columns {indices} are not GPU0..GPU{len(indices) - 1}"
        )
    rows = block.gpu_rows()
    if [index for _, index, _ in rows] != indices:
        raise InvalidArgumentError(
            f"{what}: the matrix at line {block.line_no} has rows for GPUs "
            f"{[index for _, index, _ in rows]}, columns for {indices}"
        )
    cells: dict[tuple[int, int], tuple[int, str]] = {}
    for line_no, i, values in rows:
        if len(values) < len(block.columns):
            raise InvalidArgumentError(
                f"{what}: line {line_no}: GPU{i} has {len(values)} cells for {len(block.columns)} columns"
            )
        for position, j in columns:
            cells[(i, j)] = (line_no, values[position])
        if values[columns[i][0]].upper() != "X":
            raise InvalidArgumentError(f"{what}: line {line_no}: GPU{i} to itself is {values[columns[i][0]]!r}, not X")
    return cells


def _numa_node(block: _Block, values: list[str]) -> int | None:
    if "NUMA Affinity" not in block.affinity:
        return None
    extra = values[len(block.columns) :]
    position = block.affinity.index("NUMA Affinity")
    if position < len(extra) and extra[position].isdigit():
        return int(extra[position])
    return None


def parse_nvidia_smi(text: str, *, source: str = "nvidia-smi") -> HostTopology:
    """Turn ``nvidia-smi topo -m`` output (optionally followed by ``topo -p2p r``) into a topology.

    Args:
        text: what nvidia-smi printed.
        source: recorded as :attr:`HostTopology.source` (a file name, "nvidia-smi").

    Returns:
        The GPUs (index and NUMA node; nvidia-smi's matrix names no UUID or bus id), the link
        of every GPU pair, and peer access where a P2P matrix was given.

    Raises:
        InvalidArgumentError: no matrix, an unknown cell, a missing row or a non-X diagonal;
            the message names the line.
    """
    blocks = _blocks(text)
    if not blocks:
        raise InvalidArgumentError(f"{source}: no matrix found (expected a header row starting with GPU0)")
    topo, p2p_blocks = blocks[0], blocks[1:]

    links: dict[tuple[int, int], Link] = {}
    for (i, j), (line_no, cell) in _gpu_cells(topo, source).items():
        if i == j:
            continue
        try:
            links[(i, j)] = Link.parse(cell)
        except InvalidArgumentError as exc:
            hint = " (a P2P matrix must come after the topo -m matrix)" if cell.upper() in P2P_STATUS else ""
            raise InvalidArgumentError(f"{source}: line {line_no}: {exc}{hint}") from None
    gpus = tuple(Gpu(index=i, numa_node=_numa_node(topo, values)) for _, i, values in topo.gpu_rows())

    access: dict[tuple[int, int], bool] = {}
    for block in p2p_blocks:
        cells = _gpu_cells(block, source)
        if {i for i, _ in cells} != set(range(len(gpus))):
            raise InvalidArgumentError(f"{source}: the P2P matrix at line {block.line_no} is not over the same GPUs")
        for (i, j), (line_no, cell) in cells.items():
            if i == j:
                continue
            word = cell.upper()
            if word not in P2P_STATUS:
                raise InvalidArgumentError(
                    f"{source}: line {line_no}: {cell!r} is not a P2P status ({', '.join(P2P_STATUS)})"
                )
            status = P2P_STATUS[word]
            if status is not None:
                access[(i, j)] = access.get((i, j), True) and status
    return HostTopology(gpus, links, access, source)
