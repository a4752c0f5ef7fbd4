"""The README's commands and the examples run (shortened), not only parse."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

from lightning_ssl.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result


def test_quickstart_prints_the_probe_table() -> None:
    out = _run("examples/quickstart.py", "--epochs", "1").stdout
    rows = dict(re.findall(r"^(random init|SimCLR pretrained|raw pixels)\s+([0-9.]+)\s+[0-9.]+$", out, re.M))
    assert set(rows) == {"random init", "SimCLR pretrained", "raw pixels"}, out
    assert all(0.1 < float(acc) <= 1.0 for acc in rows.values()), rows  # above chance (10 classes)
    # the per-epoch label-free monitoring table: RankMe (<= 512 dims), probe and kNN accuracy
    epoch = re.search(r"^\s+0\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)$", out, re.M)
    assert epoch is not None, out
    rank, probe, knn = map(float, epoch.groups())
    assert 1.0 <= rank <= 512 and 0.0 <= probe <= 1.0 and 0.1 < knn <= 1.0, epoch.groups()


def test_subclassing_example_trains_and_logs_its_parts() -> None:
    out = _run("examples/subclass_method.py", "--max-steps", "2").stdout
    assert "train/uniformity" in out and "train/nt_xent" in out, out


def test_continual_pretraining_example_resumes_at_the_constant_level() -> None:
    out = _run("examples/continual_pretraining.py", "--steps", "30", "12").stdout
    constant = float(re.search(r"^constant level lr = ([0-9.e+-]+)$", out, re.M).group(1))
    first = float(re.search(r"^run 2 first lr = ([0-9.e+-]+) ", out, re.M).group(1))
    assert first == constant, out  # the second run does not re-warm: it starts at the constant level
    peak = float(re.search(r"^\s+\d+ ([0-9.e+-]+)   end of warmup$", out, re.M).group(1))
    assert constant == 0.5 * peak, out  # run 1 warmed up to the peak and cooled down to half of it
    run2 = out[out.index("run 2: breastmnist"):]
    last = float(re.search(r"^\s+11 ([0-9.e+-]+)   end of anneal$", run2, re.M).group(1))
    assert abs(last - 0.05 * peak) < 1e-12, out  # and anneals to the minimum at its own end


def test_readme_cli_command_with_class_names_runs(tmp_path, monkeypatch) -> None:
    text = (ROOT / "README.md").read_text()
    command = re.search(r"^lightning-ssl fit --model BYOL.*?(?<!\\)$", text, re.M | re.S).group(0)
    args = shlex.split(command.replace("\\\n", " "))[1:]
    monkeypatch.chdir(tmp_path)
    assert main([*args, "--trainer.fast_dev_run=true", "--trainer.enable_progress_bar=false"]) == 0
