"""What the engine asks of the CPU (native bfloat16) and of glibc (reused large allocations)."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

from liteseg import cpu


class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def mapped_bytes() -> int:
    """Bytes glibc currently serves with their own mmap (mallinfo2's hblkhd)."""
    libc = cpu._glibc()
    libc.mallinfo2.restype = MallInfo2
    return libc.mallinfo2().hblkhd


@pytest.mark.parametrize("flags, expected", [("fpu avx512f avx512_bf16 avx512_vnni", True),
                                             ("fpu amx_bf16 amx_tile", True), ("fpu avx512f avx512bw", False)])
def test_native_bfloat16_reads_the_cpu_flags(tmp_path, monkeypatch, flags, expected):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: test\nflags\t\t: {flags}\n")
    monkeypatch.setattr(cpu, "_CPUINFO", cpuinfo)
    cpu.native_bfloat16.cache_clear()
    try:
        assert cpu.native_bfloat16() is expected
    finally:
        cpu.native_bfloat16.cache_clear()


@pytest.mark.skipif(cpu._glibc() is None or not hasattr(cpu._glibc(), "mallinfo2"), reason="needs glibc >= 2.33")
def test_large_blocks_come_from_the_heap_only_inside_the_block():
    size = 96 * 2**20  # above glibc's largest dynamic mmap threshold (32 MiB)
    with cpu.reused_large_allocations() as active:
        if not active:
            pytest.skip("this glibc refuses an mmap threshold above 32 MiB")
        before = mapped_bytes()
        inside = np.ones(size, np.uint8)
        assert mapped_bytes() == before
        del inside
    before = mapped_bytes()
    outside = np.ones(size, np.uint8)
    assert mapped_bytes() >= before + size
    del outside
