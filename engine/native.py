"""backline's compiled parts: small C files built by `pip install` (setup.py) and loaded with cffi.

Each includes no Python header, so cffi loads it in ABI mode (`ffi.dlopen`) and a C compiler
with libc is all the build needs. The extensions are optional: without a compiler the install
still succeeds, and what needs one says in one line what to install. Bottom module: imports
only the error type.
"""

from __future__ import annotations

import importlib.util
from functools import cache
from typing import Any

from engine.errors import BacklineError


@cache
def load(module: str, source: str, cdef: str) -> tuple[Any, Any]:
    """(ffi, lib) of the compiled `module` (built from `source`), or BacklineError naming what is missing."""
    import cffi

    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise BacklineError(f"backline's real-time {source} was not built: install a C compiler "
                            "(apt-get install gcc libc6-dev) and reinstall backline (pip install -e . --force-reinstall)")
    ffi = cffi.FFI()
    ffi.cdef(cdef)
    try:
        return ffi, ffi.dlopen(spec.origin)
    except OSError as err:
        raise BacklineError(f"cannot load backline's compiled {source} ({spec.origin}): {err}") from err


def address(ffi: Any, pointer: Any) -> int:
    """A pointer of any cffi binding (JACK-Client's, sounddevice's, ours) as an integer."""
    return int(ffi.cast("uintptr_t", pointer))
