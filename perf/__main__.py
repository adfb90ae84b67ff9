"""``python -m perf all_reduce_perf ...`` (same as ``python -m perf.cli``)."""

import sys

from .cli import main

sys.exit(main())
