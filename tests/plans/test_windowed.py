"""``plans.windowed``'s one-way plans through the slots (``OneWay``: broadcasts and reduces;
``SlotExchange``: gathers and scatters) share one setup (``_SlotCall``): the engine's plan made
on the first call, its C plan and the root's index in the window kept, every field in a slot
(no instance dict: the calls read them each time)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from collectives.plans.windowed import OneWay, SlotExchange


class _Kernel:
    native = None  # no C plan: nothing to arm
    index = {3: 1}  # world rank 3 is window rank 1


@pytest.mark.parametrize("plan", [OneWay, SlotExchange])
def test_a_slot_call_opens_its_window_once_and_keeps_the_roots_index(plan: Any) -> None:
    opened: list[object] = []
    windows = SimpleNamespace(small=lambda call: opened.append(call) or "window")
    made: list[object] = []
    p = plan(windows, 3, lambda window: made.append(window) or _Kernel())
    assert not hasattr(p, "__dict__")  # every field in a slot
    assert (p.kernel, p.native, p.root_index) == (None, None, 0)
    kernel = p._open("call")
    assert (p.kernel, p.native, p.root_index) == (kernel, None, 1)
    assert (opened, made) == (["call"], ["window"])


def test_a_one_way_plan_keeps_whether_it_averages() -> None:
    assert OneWay(None, 0, lambda window: None, averages=True).averages
    assert not OneWay(None, 0, lambda window: None).averages
