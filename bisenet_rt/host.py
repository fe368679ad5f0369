"""Facts about the machine this process runs on: CPU model, instruction sets, cores it may use.

One place, read by the build (which backend and INT8 recipe fit here), the backends (how many
threads; whether an INT8 artifact fits this CPU) and the reports. Nothing here imports a heavy
library; the runtime probes (TensorRT, OpenVINO) are the backends' own `availability()`.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import platform
from pathlib import Path

__all__ = ["CpuFeatures", "cpu_name", "cpu_flags", "cpu_features", "physical_cores", "FLAGS_OF_INTEREST"]

#: The /proc/cpuinfo flags that decide which CPU path is fastest or exact, as reports list them.
FLAGS_OF_INTEREST = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16",
                     "amx_tile", "amx_int8", "amx_bf16")


@dataclasses.dataclass(frozen=True)
class CpuFeatures:
    """What the CPU can compute fast: the instruction-set facts the backend and INT8 choices rest on."""

    avx2: bool = False
    avx512: bool = False
    vnni: bool = False      # int8 dot products into int32 (AVX512-VNNI or AVX-VNNI): no int16 saturation
    amx_int8: bool = False
    bf16: bool = False      # native BF16 arithmetic (AVX512-BF16 or AMX-BF16)

    @classmethod
    def from_flags(cls, flags: frozenset[str] | set[str]) -> "CpuFeatures":
        """Read the facts from /proc/cpuinfo-style flag names."""
        return cls(avx2="avx2" in flags, avx512="avx512f" in flags,
                   vnni=bool({"avx512_vnni", "avx_vnni"} & flags), amx_int8="amx_int8" in flags,
                   bf16=bool({"avx512_bf16", "amx_bf16"} & flags))

    @property
    def exact_int8(self) -> bool:
        """Whether int8 products sum without saturating (VNNI or AMX), so 8-bit weights are safe on the CPU."""
        return self.vnni or self.amx_int8

    @property
    def label(self) -> str:
        """The CPU class in a word or two, for messages and reports."""
        if self.amx_int8:
            return "AMX"
        if self.avx512:
            return "AVX-512" + (" VNNI" if self.vnni else "") + (" BF16" if self.bf16 else "")
        if self.avx2:
            return "AVX2" + (" VNNI" if self.vnni else "")
        return "x86-64 without AVX2" if platform.machine() in ("x86_64", "AMD64") else platform.machine()


def _cpuinfo_field(name: str) -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(name):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


@functools.cache
def cpu_name() -> str:
    """The CPU model as the kernel reports it."""
    return _cpuinfo_field("model name") or platform.processor() or platform.machine()


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's instruction-set flags (/proc/cpuinfo; empty where the kernel does not list them)."""
    return frozenset((_cpuinfo_field("flags") or "").split())


def cpu_features() -> CpuFeatures:
    """This CPU's `CpuFeatures`."""
    return CpuFeatures.from_flags(cpu_flags())


def _usable_cpus() -> set[int]:
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return set(range(os.cpu_count() or 1))


def physical_cores() -> int:
    """Physical cores among the CPUs this process may run on (its affinity, not the whole host).

    Hyper-threads share an FPU, so more compute threads than this only add contention. Cores are
    told apart by their (package, core id) topology; where the kernel does not say, every usable
    CPU counts as a core.
    """
    cpus = _usable_cpus()
    cores = set()
    for cpu in cpus:
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add(((topology / "physical_package_id").read_text().strip(), (topology / "core_id").read_text().strip()))
        except OSError:
            cores.add(("cpu", str(cpu)))
    return max(1, len(cores))
