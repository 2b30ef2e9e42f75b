"""Chooses between each compiled core module and its pure-Python twin.

On CPython the compiled modules are required: a missing one is an ImportError
that says how to build it, never a silent slide to the slow path (as
python-zstandard does). ``STELLAR_LIVE_SOURCE_NO_EXTENSIONS=1`` forces the pure
twins; on other interpreters they are the default.
"""

from __future__ import annotations

import importlib
import os
import platform
from types import ModuleType

ENV_NO_EXTENSIONS = "STELLAR_LIVE_SOURCE_NO_EXTENSIONS"
NO_EXTENSIONS = os.environ.get(ENV_NO_EXTENSIONS, "") not in ("", "0")
COMPILED_EXPECTED = platform.python_implementation() == "CPython" and not NO_EXTENSIONS

#: "cython" or "python": which twin every selector loaded (they all agree).
BACKEND = "cython" if COMPILED_EXPECTED else "python"


def select(name: str) -> ModuleType:
    """Import ``stellar_live_source.core.<name>_c`` or ``<name>_py``."""
    if not COMPILED_EXPECTED:
        return importlib.import_module(f"stellar_live_source.core.{name}_py")
    try:
        return importlib.import_module(f"stellar_live_source.core.{name}_c")
    except ImportError as exc:
        raise ImportError(
            f"the compiled core module stellar_live_source.core.{name}_c is missing ({exc}); "
            f"reinstall with a C compiler (`pip install .`) or set {ENV_NO_EXTENSIONS}=1 "
            "to run on the slow pure-Python core"
        ) from exc
