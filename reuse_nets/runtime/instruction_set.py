"""The CPU's instruction set, as it picks TensorFlow's kernels and so a result's low bits.

TensorFlow's matrix products run oneDNN kernels (its Eigen contractions call
oneDNN's sgemm even with `TF_ENABLE_ONEDNN_OPTS=0`), and oneDNN picks them when the
process starts from the CPU's features, capped by `ONEDNN_MAX_CPU_ISA`. Kernels of
different widths (8 float32 lanes for AVX2, 16 for AVX-512) sum a dot product in a
different order, so two machines that differ here disagree in the last bits even
with the same code, libraries and settings. Measured 2026-12-07 on an AVX-512 + AMX
machine: the saved legacy models' predictions differed from an AVX2 recording by up
to 5 ulp; with `ONEDNN_MAX_CPU_ISA=AVX2` (and oneDNN's graph rewrites off, as
recorded) they were identical (docs/reproducing.md).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import platform
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
# Read by oneDNN once, at its first kernel; `DNNL_` is its older spelling.
ISA_CAP_ENVS = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")
# CPU flags (as /proc/cpuinfo spells them) that select float kernels in oneDNN and Eigen.
KERNEL_FEATURES = (
    "sse4_1",
    "avx",
    "f16c",
    "fma",
    "avx2",
    "avx_vnni",
    "avx512f",
    "avx512dq",
    "avx512bw",
    "avx512vl",
    "avx512cd",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
    "amx_fp16",
)
_AVX512_CORE = ("avx512f", "avx512dq", "avx512bw", "avx512vl")
# oneDNN's CPU ISA ladder, highest first: (its `ONEDNN_MAX_CPU_ISA` name, the CPU flags it
# needs, what `ONEDNN_VERBOSE=1` prints for it). oneDNN uses the highest rung the CPU has.
ONEDNN_ISAS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    (
        "AVX10_1_512_AMX_FP16",
        (*_AVX512_CORE, "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8", "amx_fp16"),
        "Intel AVX-512 with float16, Intel DL Boost and bfloat16 support and Intel AMX with bfloat16, 8-bit integer and float16 support",
    ),
    (
        "AVX10_1_512_AMX",
        (*_AVX512_CORE, "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8"),
        "Intel AVX-512 with float16, Intel DL Boost and bfloat16 support and Intel AMX with bfloat16 and 8-bit integer support",
    ),
    (
        "AVX10_1_512",
        (*_AVX512_CORE, "avx512_vnni", "avx512_bf16", "avx512_fp16"),
        "Intel AVX-512 with float16, Intel DL Boost and bfloat16 support",
    ),
    (
        "AVX512_CORE_BF16",
        (*_AVX512_CORE, "avx512_vnni", "avx512_bf16"),
        "Intel AVX-512 with Intel DL Boost and bfloat16 support",
    ),
    ("AVX512_CORE_VNNI", (*_AVX512_CORE, "avx512_vnni"), "Intel AVX-512 with Intel DL Boost"),
    ("AVX512_CORE", _AVX512_CORE, "Intel AVX-512 with AVX512BW, AVX512VL, and AVX512DQ extensions"),
    ("AVX2_VNNI", ("avx2", "avx_vnni"), "Intel AVX2 with Intel DL Boost"),
    ("AVX2", ("avx2",), "Intel AVX2"),
    ("AVX", ("avx",), "Intel AVX"),
    ("SSE41", ("sse4_1",), "Intel SSE4.1"),
)
# `ONEDNN_MAX_CPU_ISA` aliases oneDNN accepts for the rungs above.
_ISA_ALIASES = {
    "AVX512_CORE_FP16": "AVX10_1_512",
    "AVX512_CORE_AMX": "AVX10_1_512_AMX",
    "AVX512_CORE_AMX_FP16": "AVX10_1_512_AMX_FP16",
}
GENERIC = "generic"  # no x86 feature the ladder knows: another architecture or no /proc/cpuinfo


@dataclasses.dataclass(frozen=True)
class Cpu:
    """What identifies this machine's float kernels."""

    vendor: str  # e.g. GenuineIntel, AuthenticAMD
    family_model: str  # "family/model/stepping" as /proc/cpuinfo numbers them
    features: tuple[str, ...]  # the `KERNEL_FEATURES` this CPU has
    kernel_isa: str  # the oneDNN ISA its kernels use here (cap applied), e.g. AVX2

    def describe(self) -> str:
        return f"{self.kernel_isa} kernels ({self.vendor} {self.family_model}; {' '.join(self.features) or 'no x86 features'})"


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (empty where there is none)."""
    fields: dict[str, str] = {}
    try:
        text = CPUINFO.read_text()
    except OSError:
        return fields
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break  # one processor is enough: they are alike
            continue
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return fields


def isa_cap(environ=os.environ) -> str | None:
    """The ceiling `ONEDNN_MAX_CPU_ISA` sets, in the ladder's spelling (None: no cap)."""
    for name in ISA_CAP_ENVS:
        value = environ.get(name, "").strip().upper()
        if value and value not in ("ALL", "DEFAULT"):
            return _ISA_ALIASES.get(value, value)
    return None


def kernel_isa(features: tuple[str, ...] | frozenset[str], cap: str | None = None) -> str:
    """The highest rung of oneDNN's ladder these CPU features reach, at most `cap`."""
    names = [name for name, _, _ in ONEDNN_ISAS]
    if cap is not None and cap not in names:
        return f"{cap}?"  # a cap oneDNN may know and this ladder does not: recorded as asked, marked unsure
    start = names.index(cap) if cap is not None else 0
    have = set(features)
    for name, needs, _ in ONEDNN_ISAS[start:]:
        if have.issuperset(needs):
            return name
    return GENERIC


def verbose_name(isa: str) -> str | None:
    """What `ONEDNN_VERBOSE=1` prints for `isa` (None for `GENERIC` or an unknown name)."""
    return next((text for name, _, text in ONEDNN_ISAS if name == isa), None)


@functools.lru_cache(maxsize=1)
def this_cpu() -> Cpu:
    """This machine's CPU, read once per process (the cap too: oneDNN reads it once)."""
    info = _cpuinfo()
    flags = set(info.get("flags", "").split())
    features = tuple(name for name in KERNEL_FEATURES if name in flags)
    family_model = "/".join(info.get(key, "?") for key in ("cpu family", "model", "stepping"))
    return Cpu(
        vendor=info.get("vendor_id") or platform.machine() or "unknown",
        family_model=family_model,
        features=features,
        kernel_isa=kernel_isa(features, isa_cap()),
    )
