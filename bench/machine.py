"""One description of the machine a benchmark ran on (imported by the scripts in this folder)."""

from __future__ import annotations

import contextlib
import os
import platform
import time
from collections.abc import Callable
from typing import Any

import torch


def describe_machine(device: torch.device | None = None, load: bool = True) -> str:
    """CPU model, visible cores, torch threads, the load average now, and the GPU when ``device`` is CUDA."""
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    text = f"CPU: {model}, {os.cpu_count()} cores visible, {torch.get_num_threads()} torch threads"
    if load:
        with contextlib.suppress(OSError):
            text += f", load average {os.getloadavg()[0]:.1f}"
    if device is not None and device.type == "cuda":
        text = f"{torch.cuda.get_device_name(device)} (+ {text})"
    return text


def sync(device: torch.device) -> None:
    """Wait for the accelerator (a no-op on CPU), so that wall-clock times cover the work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_calls(fn: Callable[[], Any], device: torch.device, repeats: int, warmup: int = 1) -> list[float]:
    """Wall time in seconds of each of ``repeats`` calls of ``fn`` after ``warmup`` untimed calls (synchronised)."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return times
