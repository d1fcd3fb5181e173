"""Puts libstdc++ in the process's global symbol scope before llama.cpp's libraries are loaded.

A CUDA build of llama-cpp-python (nvcc 13 here) leaves copies of libstdc++ template code, with default
visibility, in libggml-cuda.so. libllama.so then binds calls such as `std::ostream::operator<<(long)` to
those copies rather than to libstdc++, and when libstdc++ was already in the process before llama.cpp was
loaded (numpy, torch, pypdfium2: nearly always in the daemon), the first model load dies with SIGSEGV in
`llama_model::print_info`. Symbols of the global scope win over a library's own dependencies, so with
libstdc++ made global (`RTLD_GLOBAL`; loading it again only promotes it) every call reaches the one
libstdc++. Importing this module does it, once; `dropwarden_vision.llamacpp` imports it before
`llama_cpp`. Harmless for CPU builds and where libstdc++ is absent (then nothing is done).
"""

from __future__ import annotations

import ctypes
import sys

LIBSTDCXX = "libstdc++.so.6"


def promote_libstdcxx() -> bool:
    """RTLD_GLOBAL on libstdc++ (Linux); False where there is none to load."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        ctypes.CDLL(LIBSTDCXX, mode=ctypes.RTLD_GLOBAL)
    except OSError:
        return False
    return True


PROMOTED = promote_libstdcxx()
