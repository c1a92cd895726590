"""Measurement helpers shared by the overhead benchmarks (``probe_overhead.py``,
``loop_overhead.py``, ``scan_overhead.py``): device sync and timing, the alternating timing of
a plain and a probed step, a cross-entropy training step, gradient comparison, peak-memory
probes of the process, the header's machine line and the printed table."""

from __future__ import annotations

import datetime as _dt
import platform
import resource
import time

import torch
from torch import nn


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def alternating_times(plain, probed, repeats: int, device: torch.device,
                      before=None) -> tuple[list[float], list[float]]:
    """Seconds of ``repeats`` calls each of ``plain()`` and ``probed()``, alternating and
    swapping their order every repetition so both see the same machine noise; ``before(i)``,
    untimed, runs before each call of repetition ``i``. Returns ``(plain, probed)``."""
    t_plain, t_probed = [], []
    for i in range(repeats):
        for with_probe in ((False, True) if i % 2 == 0 else (True, False)):
            if before is not None:
                before(i)
            if with_probe:
                t_probed.append(timed(probed, device))
            else:
                t_plain.append(timed(plain, device))
    return t_plain, t_probed


def ce_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, probe=None) -> None:
    """One backward of ``cross_entropy(model(x), y)`` from zeroed gradients; with a probe,
    also what a user reads after each step (any work the probe defers until asked)."""
    model.zero_grad(set_to_none=True)
    nn.functional.cross_entropy(model(x), y).backward()
    if probe is not None:
        probe.hidden_grad_log10_norms()


def max_grad_difference(a: nn.Module, b: nn.Module) -> float:
    """Largest absolute difference between the two models' parameter gradients."""
    worst = 0.0
    for pa, pb in zip(a.parameters(), b.parameters()):
        worst = max(worst, (pa.grad - pb.grad).abs().max().item())
    return worst


def proc_status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def memory_baseline(device: torch.device) -> tuple[int, str]:
    """Start a peak-memory measurement: ``(bytes in use now, method)``, the method being
    "cuda.max_memory_allocated" (CUDA, peak counter reset), "VmHWM" (Linux, the resident
    high-water mark reset) or "ru_maxrss" (a high-water mark since process start: the
    measured peak is then a lower bound)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device), "cuda.max_memory_allocated"
    if reset_peak_rss() and proc_status_kib("VmRSS") is not None:
        return 1024 * proc_status_kib("VmRSS"), "VmHWM"
    return 1024 * resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "ru_maxrss"


def memory_peak(device: torch.device, method: str) -> int:
    """The peak bytes since :func:`memory_baseline` returned ``method``."""
    sync(device)
    if method == "cuda.max_memory_allocated":
        return torch.cuda.max_memory_allocated(device)
    if method == "VmHWM":
        return 1024 * proc_status_kib("VmHWM")
    return 1024 * resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join("-" * w for w in widths)

    def fmt(r: list[str]) -> str:
        return "  ".join(c.rjust(w) for c, w in zip(r, widths))

    return "\n".join([fmt(header), line, *(fmt(r) for r in rows)])


def machine_line(device: torch.device, version: str) -> str:
    """The first lines of a benchmark's header: versions, device, threads and time."""
    if device.type == "cuda":
        hw = torch.cuda.get_device_name(device)
    else:
        hw = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    return (
        f"rnn_diag {version}, torch {torch.__version__}, python {platform.python_version()}"
        f"\ndevice {device} ({hw}), {_dt.datetime.now().isoformat(timespec='seconds')}"
    )
