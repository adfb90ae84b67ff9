"""The end of every script tests/faults runs under mpiexec: run ``main``, and on any
failure print it and abort the whole MPI job (a rank that just raised would leave the
others blocked in MPI until the test's own timeout)."""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from typing import Any


def main_or_abort(main: Callable[[], Any], world: Any) -> None:
    try:
        main()
    except BaseException:
        traceback.print_exc()
        sys.stdout.flush()
        world.Abort(1)
