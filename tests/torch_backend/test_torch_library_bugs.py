"""Library behaviour the torch backend depends on."""

from __future__ import annotations

import torch

from collectives.buffers import as_flat_array


def test_viewing_a_tensor_leaves_its_storage_resizable() -> None:
    t = torch.zeros(16)
    as_flat_array(t, "x")
    t.untyped_storage().resize_(0)  # RuntimeError: Trying to resize storage that is not resizable
