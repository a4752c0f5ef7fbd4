"""Run a function on N local CPU processes joined in a gloo process group (for tests).

Usage::

    from ddp_utils import run_ddp

    def _worker(rank: int, world_size: int, x: torch.Tensor) -> torch.Tensor:
        # the default process group is initialised here (gloo, CPU)
        return lightning_ssl.distributed.gather_no_grad(x[rank : rank + 1])

    def test_gather():
        results = run_ddp(_worker, torch.arange(2.0), world_size=2)
        assert all(torch.equal(r, torch.arange(2.0)) for r in results)

Rules that ``torch.multiprocessing`` spawn imposes:

- ``fn`` must be importable by the child: a module-level function of a test module or a library
  module (not a lambda, closure or nested function).
- ``args``, ``kwargs`` and the return value of ``fn`` must be picklable (tensors are fine).

``fn(rank, world_size, *args, **kwargs)`` runs in every rank after ``init_process_group`` (gloo,
TCP on a free port of 127.0.0.1); ``run_ddp`` returns the list of the ranks' return values,
indexed by rank. If any rank raises (an ``AssertionError`` included), the other ranks are
terminated and the parent re-raises the *original* exception of the first failing rank, with the
child's traceback attached as its cause, so pytest shows a normal failure. A run that exceeds
``timeout`` seconds is killed and raises ``TimeoutError``.

Each child uses ``torch.set_num_threads(threads)`` (default 1) so that N processes do not
oversubscribe a small CPU.

Start method: ``forkserver`` where the platform has it (Linux, macOS), else ``spawn``. Both start
children that never inherit the parent's threads (safe with gloo and OpenMP) and have the same
rules as above. The fork server is started once per test session with ``torch`` preloaded, so
only the first ``run_ddp`` call pays for importing torch (seconds); later calls start ranks in
well under a second. Pass ``start_method="spawn"`` to get fully fresh interpreters.

Test modules are imported in the children by their module name: keep pytest's default
``prepend`` import mode (``--import-mode=importlib`` gives names the children cannot import).
"""

from __future__ import annotations

import datetime
import os
import pickle
import socket
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

__all__ = ["run_ddp", "free_port", "ChildTraceback"]

_PRELOAD = ["torch", "torch.distributed", "torch.nn", "torch.nn.parallel"]


def _default_start_method() -> str:
    import multiprocessing

    return "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


class ChildTraceback(Exception):
    """Carries the formatted traceback of a failed child process (the ``__cause__`` of the re-raise)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _child(
    rank: int,
    fn: Callable[..., Any],
    world_size: int,
    port: int,
    backend: str,
    threads: int,
    timeout: float,
    out_dir: str,
    args: tuple,
    kwargs: dict,
) -> None:
    torch.set_num_threads(threads)
    if sys.platform.startswith("linux"):
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    out_path = os.path.join(out_dir, f"rank{rank}.pkl")
    try:
        dist.init_process_group(
            backend,
            init_method=f"tcp://127.0.0.1:{port}",
            rank=rank,
            world_size=world_size,
            timeout=datetime.timedelta(seconds=timeout),
        )
        try:
            result = fn(rank, world_size, *args, **kwargs)
        finally:
            dist.destroy_process_group()
        payload: tuple = ("ok", result)
    except BaseException as exc:  # noqa: BLE001 - everything goes back to the parent
        tb = traceback.format_exc()
        try:
            pickle.dumps(exc)
            payload = ("error", exc, tb)
        except Exception:  # unpicklable exception: send its repr
            payload = ("error", RuntimeError(f"{type(exc).__name__}: {exc}"), tb)
        with open(out_path, "wb") as f:
            pickle.dump(payload, f)
        raise
    with open(out_path, "wb") as f:
        torch.save(payload, f)


def _load(path: str) -> tuple | None:
    if not os.path.exists(path):
        return None
    try:
        with open(path, "rb") as f:
            return torch.load(f, weights_only=False)
    except Exception:
        with open(path, "rb") as f:
            return pickle.load(f)


def run_ddp(
    fn: Callable[..., Any],
    *args: Any,
    world_size: int = 2,
    backend: str = "gloo",
    timeout: float = 120.0,
    threads: int = 1,
    start_method: str | None = None,
    **kwargs: Any,
) -> list[Any]:
    """Run ``fn(rank, world_size, *args, **kwargs)`` on ``world_size`` spawned processes.

    Returns the ranks' return values as a list indexed by rank; re-raises the first child
    exception in the parent (see the module docstring). ``timeout`` bounds both the whole run and
    every collective inside it. Keyword arguments other than ``world_size``, ``backend``,
    ``timeout``, ``threads`` and ``start_method`` are passed on to ``fn``.
    """
    start_method = start_method or _default_start_method()
    if start_method == "forkserver":
        # no effect once the server runs; the server then serves every later call
        mp.get_context("forkserver").set_forkserver_preload(_PRELOAD)
    with tempfile.TemporaryDirectory(prefix="ddp_utils_") as out_dir:
        ctx = mp.start_processes(
            _child,
            args=(fn, world_size, free_port(), backend, threads, timeout, out_dir, args, kwargs),
            nprocs=world_size,
            join=False,
            start_method=start_method,
        )
        deadline = time.monotonic() + timeout
        try:
            while not ctx.join(timeout=0.5):
                if time.monotonic() > deadline:
                    for p in ctx.processes:
                        if p.is_alive():
                            p.kill()
                    for p in ctx.processes:
                        p.join(timeout=5)
                    raise TimeoutError(f"run_ddp({getattr(fn, '__name__', fn)}) exceeded {timeout} s")
        except (mp.ProcessRaisedException, mp.ProcessExitedException) as err:
            # join() terminated the other ranks; report the first rank that saved an error
            failed = [err.error_index] + [r for r in range(world_size) if r != err.error_index]
            for r in failed:
                payload = _load(os.path.join(out_dir, f"rank{r}.pkl"))
                if payload is not None and payload[0] == "error":
                    _, exc, tb = payload
                    exc.args = (f"[rank {r}] {exc.args[0]}" if exc.args else f"[rank {r}]", *exc.args[1:])
                    raise exc from ChildTraceback(f"traceback in rank {r}:\n{tb}")
            raise
        results = []
        for r in range(world_size):
            payload = _load(os.path.join(out_dir, f"rank{r}.pkl"))
            if payload is None or payload[0] != "ok":
                raise RuntimeError(f"rank {r} exited without a result")
            results.append(payload[1])
        return results
