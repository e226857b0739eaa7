"""Device and numeric precision selection shared by the extractor, the CLI, the node and training."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable

import torch

from goodpoint_ros.registry import PRECISIONS  # the one list (the node parameter's choices too)

log = logging.getLogger("goodpoint_ros.precision")

# /proc/cpuinfo flags of x86 CPUs whose bf16 matrix units make torch's bf16 autocast fast:
# AVX-512 BF16 (AMD Zen 4+, Intel Cooper Lake+) and AMX (Intel Sapphire Rapids+).
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
# Overrides /proc/cpuinfo (tests, or a user who wants auto to ignore the hardware):
# a comma/space separated flag list, e.g. "avx512_bf16" or "" (no flags).
CPU_FLAGS_ENV = "GOODPOINT_CPU_FLAGS"


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Map ``auto|cpu|cuda[:i]`` to a torch device; ``auto`` prefers CUDA when present."""
    if isinstance(device, torch.device):
        return device
    if device in ("auto", "", None):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device '{device}' requested but CUDA is not available on this machine")
    return dev


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask, e.g. a container's CPU set)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def resolve_threads(requested: int, cores: int | None = None, spare: int = 0) -> tuple[int, str]:
    """(threads, why) for the network's CPU thread pools: ``requested`` when > 0, else every core
    this process may use but ``spare`` (at least one thread).

    The live node spares one core for its second stage (matching, odometry, messages), which runs
    beside the network: a pool that wants every core waits at each layer for the thread that stage,
    DDS or a subscriber preempted. On a 2-core Intel Xeon (``bench/node.py --soak 40 --threads 1|2``,
    every output subscribed) one thread processed 30.0 Hz at 320x240 and 16.1 Hz at 640x480 against
    27.9 and 13.4 Hz with two (extraction p50 22 vs 35 ms at 320x240, though two threads are 1.6x
    faster alone); an earlier soak on a 2-core AMD EPYC had measured the reverse at 640x480 (16-17
    vs 13 Hz), so the rule is the one that keeps 30 Hz where measured (docs/decisions.md).
    Offline tools (goodpoint-extract, -match, -bag) run one stage and take every core."""
    if int(requested) > 0:
        return int(requested), "requested"
    cores = cores or usable_cores()
    threads = max(1, cores - spare)
    return threads, f"{cores} cores" + (
        f", {cores - threads} left to the node's output stage" if threads < cores else ""
    )


# glibc's mallopt(3) parameters (malloc.h) and the size of freed memory the process keeps.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8
KEEP_FREED_BYTES = 256 << 20
_kept: bool | None = None


def keep_freed_memory(limit: int = KEEP_FREED_BYTES) -> bool:
    """Have glibc reuse freed blocks of up to ``limit`` bytes instead of returning them to the
    kernel; True where it applied (glibc), False elsewhere. Once per process.

    Why: eager torch on a CPU allocates every activation afresh. glibc serves large blocks with
    new ``mmap`` pages (and trims its heap on free), so each frame pays for the kernel to map and
    zero the full-resolution activations again: 20 MB per layer for goodpoint_small at 640x480 in
    bf16. Keeping them halved that network's time (28 -> 14 ms on 2 Xeon AMX cores, bench/README).
    The cost is resident memory up to the peak of one forward pass, which a camera node reaches on
    every frame anyway. The thresholds hold for glibc's main arena only: a thread's own arena
    (the node runs the network on a worker thread) is a 64 MB heap that is mapped and unmapped
    around each 20 MB activation, so every thread allocates from the main arena (one arena; the
    few threads that allocate here rarely contend). Measured at 640x480, one torch thread, AMD
    EPYC: the network on a worker thread 84 ms with 96,000 page faults per 20 frames, 76 ms and
    none with one arena, as on the main thread. An arena is kept by the thread that made it, so
    a process calls this before it starts threads (the node: before ``rclpy.init``). Process-wide,
    so the torch backend, the node and training call it, not the core's functions.
    """
    global _kept
    if _kept is None:
        libc = _glibc("mallopt")
        _kept = libc is not None and (
            bool(libc.mallopt(_M_MMAP_THRESHOLD, int(limit)))
            and bool(libc.mallopt(_M_TRIM_THRESHOLD, 2 * int(limit)))
            and bool(libc.mallopt(_M_ARENA_MAX, 1))
        )
    return _kept


def _glibc(function: str):
    """This process's C library when it is glibc and has ``function``, else None (not Linux, musl)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None)
    except OSError:  # no C library to load
        return None
    return libc if hasattr(libc, "gnu_get_libc_version") and hasattr(libc, function) else None


def release_freed_memory() -> bool:
    """Return glibc's free heap pages to the kernel (``malloc_trim(0)``); True where it released any.

    ``keep_freed_memory`` makes glibc keep what one forward pass freed, which is right while the
    frame size holds; after a burst of large frames (three 4K frames took a node from 442 to
    1313 MB, still 1289 MB 30 s later) the node calls this once the size has gone down, so memory
    returns near its baseline instead of staying at the burst's peak.
    """
    libc = _glibc("malloc_trim")
    return libc is not None and bool(libc.malloc_trim(0))


def cpu_flags(path: str = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU's feature flags (first processor's ``flags`` line); ``$GOODPOINT_CPU_FLAGS`` wins.

    Empty on systems without /proc/cpuinfo (macOS, Windows): ``auto`` then stays fp32 on CPU.
    """
    env = os.environ.get(CPU_FLAGS_ENV)
    if env is not None:
        return frozenset(env.replace(",", " ").split())
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return frozenset(value.split())
    except OSError:
        pass
    return frozenset()


def cpu_model(path: str = "/proc/cpuinfo") -> str:
    """The CPU's model name (for bench output), or the platform's processor string."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    return value.strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def bf16_hardware(flags: Iterable[str] | None = None) -> list[str]:
    """The bf16 matrix-unit flags this CPU has (``BF16_FLAGS`` found in ``flags``)."""
    have = cpu_flags() if flags is None else frozenset(flags)
    return [f for f in BF16_FLAGS if f in have]


def resolve_precision(
    precision: str,
    device: torch.device | str,
    backend: str = "torch",
    flags: Iterable[str] | None = None,
) -> tuple[str, str]:
    """(chosen precision, why) for a requested ``precision`` on ``device``.

    ``auto``: fp16 on CUDA, bf16 on a CPU with AVX-512 BF16 or AMX when the
    backend has fast bf16 kernels (torch does; onnxruntime's CPU provider does not), else fp32.
    The rule comes from measurement: bf16 halves the network time on such CPUs and its held-out
    harmonic mean stays within 0.01 of fp32 (README); without the units bf16 is emulated and
    slower than fp32. int8 is never chosen automatically (calibration-dependent quality).
    ``flags`` replaces the CPU flags read from /proc/cpuinfo (tests).
    """
    p = str(precision or "auto").lower()
    if p not in PRECISIONS:
        raise ValueError(f"unknown precision '{precision}' (use {', '.join(PRECISIONS)})")
    if p != "auto":
        return p, "requested"
    kind = device.type if isinstance(device, torch.device) else str(device).split(":")[0]
    if kind in ("cuda", "tensorrt", "trt"):
        return "fp16", f"{kind} device"
    units = bf16_hardware(flags)
    if not units:
        return "fp32", f"CPU without AVX-512 BF16 or AMX ({', '.join(BF16_FLAGS)} not in its flags)"
    if backend != "torch":
        return "fp32", f"CPU has {', '.join(units)} but {backend} has no fast bf16 CPU kernels"
    return "bf16", f"CPU has {', '.join(units)}"


def choose_precision(
    precision: str,
    device: torch.device | str,
    backend: str = "torch",
    flags: Iterable[str] | None = None,
) -> str:
    """``resolve_precision`` plus one INFO log line when ``auto`` made the choice."""
    chosen, why = resolve_precision(precision, device, backend, flags)
    if str(precision or "auto").lower() == "auto":
        log.info("precision auto -> %s (%s, backend %s)", chosen, why, backend)
    kind = device.type if isinstance(device, torch.device) else str(device).split(":")[0]
    if kind == "cpu" and backend == "torch":
        if chosen == "bf16" and not bf16_hardware(flags):
            log.warning("precision bf16 on a CPU without AVX-512 BF16 or AMX: emulated, slower than fp32")
        elif chosen == "fp16":
            log.warning("precision fp16 on a CPU: emulated by most CPUs, far slower than fp32 (fp16 is for CUDA)")
    return chosen
