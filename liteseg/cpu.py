"""What the engine asks of the CPU and of the C library it runs on.

- `native_bfloat16`: whether the CPU computes bfloat16 natively (AVX512-BF16 or AMX-BF16), where
  bfloat16 convolutions are several times faster than float32; elsewhere oneDNN emulates them and
  float32 is the faster choice.
- `reused_large_allocations`: glibc serves every allocation above its mmap threshold (32 MiB at
  most) with a fresh mapping that the kernel zero-fills page by page on first touch, so each
  large temporary tensor costs page faults on top of its own work: a ReLU or a residual add over
  a 127 MB LowRes activation (bfloat16) took 58-64 ms against 17-20 ms into reused memory
  (2 cores). Inside this block such tensors come from the heap and are reused once freed.
"""

from __future__ import annotations

import contextlib
import ctypes
import sys
from functools import lru_cache
from pathlib import Path
from typing import Iterator, Optional

_CPUINFO = Path("/proc/cpuinfo")
_BFLOAT16_FLAGS = {"avx512_bf16", "amx_bf16"}

# glibc's mallopt parameters (malloc.h) and the values used inside / restored after the block.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_REUSED_MMAP_THRESHOLD = 2**30  # blocks up to 1 GiB come from the heap
_REUSED_TRIM_THRESHOLD = 2**31 - 1  # and the heap keeps what is freed
_RESTORED_MMAP_THRESHOLD = 32 * 2**20  # glibc's own dynamic threshold reaches at most 32 MiB
_RESTORED_TRIM_THRESHOLD = 2 * _RESTORED_MMAP_THRESHOLD  # and sets the trim threshold to twice it


@lru_cache(maxsize=None)
def native_bfloat16() -> bool:
    """Whether this CPU has AVX512-BF16 or AMX-BF16 (Linux: /proc/cpuinfo; elsewhere OpenVINO's
    view of the CPU when it is installed; else False, so that float32 is used)."""
    if _CPUINFO.exists():
        for line in _CPUINFO.read_text(errors="replace").splitlines():
            if line.startswith("flags"):
                return bool(_BFLOAT16_FLAGS & set(line.split(":", 1)[1].split()))
        return False
    from liteseg.segmentation.openvino_runtime import cpu_supports_bfloat16, openvino_available

    return openvino_available() and cpu_supports_bfloat16()


@lru_cache(maxsize=None)
def _glibc() -> Optional[ctypes.CDLL]:
    """The process's C library when it is glibc (the only one with these mallopt parameters)."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None)
    return libc if all(hasattr(libc, name) for name in ("gnu_get_libc_version", "mallopt", "malloc_trim")) else None


@contextlib.contextmanager
def reused_large_allocations() -> Iterator[bool]:
    """Inside the block, glibc keeps and reuses large freed blocks instead of unmapping them (see
    the module docstring). At its end the thresholds are set to what glibc's dynamic adjustment
    reaches on its own and the free memory is returned to the system. Yields whether it is in
    effect: not off glibc, nor where glibc refuses a threshold above 32 MiB (older versions)."""
    libc = _glibc()
    if libc is None or not libc.mallopt(_M_MMAP_THRESHOLD, _REUSED_MMAP_THRESHOLD):
        yield False
        return
    libc.mallopt(_M_TRIM_THRESHOLD, _REUSED_TRIM_THRESHOLD)
    try:
        yield True
    finally:
        libc.mallopt(_M_MMAP_THRESHOLD, _RESTORED_MMAP_THRESHOLD)
        libc.mallopt(_M_TRIM_THRESHOLD, _RESTORED_TRIM_THRESHOLD)
        libc.malloc_trim(0)
