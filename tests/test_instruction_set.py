"""The instruction set recorded with each run is the one oneDNN really picks its kernels for."""

import os
import re
import subprocess
import sys

import pytest

from reuse_nets.runtime import instruction_set
from reuse_nets.runtime.instruction_set import isa_cap, kernel_isa

AVX2_MACHINE = ("sse4_1", "avx", "f16c", "fma", "avx2")
AVX512_MACHINE = (*AVX2_MACHINE, "avx512f", "avx512dq", "avx512bw", "avx512vl", "avx512cd")
SAPPHIRE_RAPIDS = (*AVX512_MACHINE, "avx_vnni", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16")
SAPPHIRE_RAPIDS += ("amx_int8",)


@pytest.mark.parametrize(
    ("features", "cap", "expected"),
    [
        (AVX2_MACHINE, None, "AVX2"),
        (AVX512_MACHINE, None, "AVX512_CORE"),
        (SAPPHIRE_RAPIDS, None, "AVX10_1_512_AMX"),
        (SAPPHIRE_RAPIDS, "AVX2", "AVX2"),
        (SAPPHIRE_RAPIDS, "AVX512_CORE_BF16", "AVX512_CORE_BF16"),
        (AVX2_MACHINE, "AVX512_CORE", "AVX2"),  # a cap above the CPU changes nothing
        ((), None, instruction_set.GENERIC),  # another architecture
        (SAPPHIRE_RAPIDS, "AVX10_2_512", "AVX10_2_512?"),  # a cap the ladder does not know: kept, marked
    ],
)
def test_the_kernel_isa_is_the_highest_rung_the_cpu_reaches_under_the_cap(features, cap, expected):
    assert kernel_isa(features, cap) == expected


def test_the_cap_is_read_as_onednn_reads_it():
    assert isa_cap({}) is None
    assert isa_cap({"ONEDNN_MAX_CPU_ISA": "avx2"}) == "AVX2"
    assert isa_cap({"DNNL_MAX_CPU_ISA": "AVX512_CORE_AMX"}) == "AVX10_1_512_AMX"  # the older spelling and alias
    assert isa_cap({"ONEDNN_MAX_CPU_ISA": "ALL"}) is None


def test_this_cpu_is_read_from_proc_cpuinfo():
    cpu = instruction_set.this_cpu()
    try:
        with open("/proc/cpuinfo") as info:
            lines = [line for line in info if line.startswith("flags")]
    except OSError:
        lines = []
    if not lines:
        pytest.skip("no x86 flags in /proc/cpuinfo")
    flags = set(lines[0].split(":", 1)[1].split())
    assert set(cpu.features) == flags & set(instruction_set.KERNEL_FEATURES)
    assert re.fullmatch(r"\d+/\d+/\d+", cpu.family_model)
    assert cpu.kernel_isa in cpu.describe()


ONEDNN_PROBE = "import tensorflow as tf; a = tf.ones((64, 64)); print(float(tf.reduce_sum(tf.matmul(a, a))))"


@pytest.mark.parametrize("cap", [None, "AVX2"])
def test_the_recorded_isa_is_what_onednn_reports_for_tensorflows_matmul(cap):
    """What oneDNN itself says (`ONEDNN_VERBOSE`) for a TensorFlow matmul, with and without a cap."""
    env = {**os.environ, "ONEDNN_VERBOSE": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("ONEDNN_MAX_CPU_ISA", None)
    env.pop("DNNL_MAX_CPU_ISA", None)
    if cap:
        env["ONEDNN_MAX_CPU_ISA"] = cap
    features = instruction_set.this_cpu().features
    if cap and kernel_isa(features) == instruction_set.GENERIC:
        pytest.skip("not an x86 CPU: no oneDNN ISA to cap")
    proc = subprocess.run([sys.executable, "-c", ONEDNN_PROBE], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    reported = re.findall(r"onednn_verbose,.*?info,cpu,isa:(.*)", proc.stdout + proc.stderr)
    assert reported, "oneDNN printed no ISA: " + (proc.stdout + proc.stderr)[-2000:]
    assert reported[0].strip() == instruction_set.verbose_name(kernel_isa(features, cap))
