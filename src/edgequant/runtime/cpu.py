"""What the CPU can do fast with ONNX Runtime's integer kernels.

On x86 without VNNI (AVX2 only) ORT's u8×s8 kernels use ``vpmaddubsw``, whose int16 intermediate
can saturate; ORT's documented remedy is ``reduce_range`` (7-bit weights).  With VNNI (AVX-512
VNNI or AVX-VNNI) or on ARM (sdot/udot) the full 8-bit range is safe.  On x86, u8 activations are
also about twice as fast as s8 in ORT's QLinear kernels, so "auto" signedness picks unsigned.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CpuFeatures:
    arch: str
    vnni: bool
    avx2: bool

    @property
    def needs_reduce_range(self) -> bool:
        return self.arch in ("x86_64", "AMD64", "i386") and not self.vnni

    def describe(self) -> str:
        extras = [n for n, on in (("vnni", self.vnni), ("avx2", self.avx2)) if on]
        return f"{self.arch} ({', '.join(extras) or 'no avx2/vnni'})"


def detect(cpuinfo: Path = Path("/proc/cpuinfo")) -> CpuFeatures:
    arch = platform.machine()
    flags: set[str] = set()
    try:
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("flags"):
                flags.update(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    vnni = bool(flags & {"avx512_vnni", "avx_vnni", "avx_vnni_int8"})
    if arch in ("aarch64", "arm64"):
        vnni = True  # sdot/udot: no u8 x s8 saturation
    return CpuFeatures(arch=arch, vnni=vnni, avx2="avx2" in flags)
