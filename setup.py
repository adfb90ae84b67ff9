"""The optional C part: the small-window collectives' happy path (collectives/engines/_small_c.c).

Everything else is in pyproject.toml. ``optional=True``: where no C compiler is present the
install goes on without it, and every call runs in Python (collectives/engines/small_native.py).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension(
    "collectives.engines._small_c",
    ["collectives/engines/_small_c.c"],
    extra_compile_args=["-O3", "-std=c11", "-D_GNU_SOURCE"],
    optional=True,
)])
