"""One description of the machine a benchmark ran on (imported by the scripts in this folder)."""

from __future__ import annotations

import contextlib
import os
import platform

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
