"""The infinite learning-rate schedule (Ibrahim et al. 2024; Singh et al. 2025): phase values, continual starts,
bad phases, the schedule driving a real Trainer run, and the LightningCLI option."""

from __future__ import annotations

import csv
import math
import pickle
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from lightning.pytorch.loggers import CSVLogger
from torch import nn

from lightning_ssl.optim import (
    INFINITE_SCHEDULE_KEYS,
    InfiniteSchedule,
    WarmupCosineSchedule,
    check_infinite_options,
    infinite_factor,
    infinite_phase_steps,
)

REPO = Path(__file__).resolve().parents[2]
MEDMNIST = REPO.parent / "shared" / "data" / "medmnist"

# a 20-step run: warm-up 3, cooldown 4, constant 8, annealing 5
T, W, C, A = 20, 3, 4, 5
CONST, MIN = 0.5, 0.01
PHASES = dict(warmup_steps=W, cooldown_steps=C, anneal_steps=A, constant_factor=CONST, min_factor=MIN)


def _factors(annealing: str = "exponential", total: int = T, **kw) -> list[float]:
    args = {**PHASES, **kw}
    return [infinite_factor(k, total, annealing=annealing, **args) for k in range(total)]


# ------------------------------------------------------------------------------------ phase values


@pytest.mark.parametrize("annealing", ["exponential", "linear"])
def test_values_at_every_phase_boundary(annealing):
    f = _factors(annealing)
    assert f[0] == pytest.approx(1 / W)  # step 0: first warm-up step, small but not zero
    assert f[W - 1] == pytest.approx(1.0)  # end of warm-up: the peak
    assert f[W + C - 1] == pytest.approx(CONST)  # end of cooldown: the constant level
    assert f[W + C] == pytest.approx(CONST)  # first constant step
    assert f[T - A - 1] == pytest.approx(CONST)  # end of the constant phase, last step before annealing
    assert f[T - A] < CONST  # annealing has started
    assert f[T - 1] == pytest.approx(MIN)  # last step: the minimum
    assert infinite_factor(T + 7, T, annealing=annealing, **PHASES) == pytest.approx(MIN)  # clamped after the run


def test_values_inside_phases_match_the_closed_forms():
    exp, lin = _factors("exponential"), _factors("linear")
    # warm-up: (k + 1) / W
    assert exp[:W] == pytest.approx([(k + 1) / W for k in range(W)])
    # cooldown: half-cosine from 1 to CONST over C steps
    assert exp[W : W + C] == pytest.approx(
        [CONST + (1 - CONST) * (1 + math.cos(math.pi * (k + 1) / C)) / 2 for k in range(C)]
    )
    assert exp[W + 1] == pytest.approx((1 + CONST) / 2)  # half-way through the cooldown (t = 2/4)
    # annealing: a straight line in log-lr (exponential) or in lr (linear)
    t = [(k + 1) / A for k in range(A)]
    assert exp[T - A :] == pytest.approx([CONST * (MIN / CONST) ** s for s in t])
    assert lin[T - A :] == pytest.approx([CONST + (MIN - CONST) * s for s in t])
    ratios = [b / a for a, b in zip(exp[T - A :], exp[T - A + 1 :])]
    assert ratios == pytest.approx([(MIN / CONST) ** (1 / A)] * (A - 1))  # constant ratio per step


@pytest.mark.parametrize("annealing", ["exponential", "linear"])
def test_monotonic_within_each_phase(annealing):
    total, w, c, a = 200, 20, 40, 50
    f = _factors(annealing, total=total, warmup_steps=w, cooldown_steps=c, anneal_steps=a)
    warm, cool, const, anneal = f[:w], f[w : w + c], f[w + c : total - a], f[total - a :]
    assert all(x < y for x, y in zip(warm, warm[1:]))
    assert all(x > y for x, y in zip(cool, cool[1:]))
    assert const == [CONST] * (total - a - w - c)
    assert all(x > y for x, y in zip(anneal, anneal[1:]))
    assert max(f) == pytest.approx(1.0) and min(f) == pytest.approx(MIN)


def test_continual_run_starts_at_the_constant_level_without_warmup():
    f = [infinite_factor(k, T, anneal_steps=A, constant_factor=CONST, min_factor=MIN) for k in range(T)]
    assert f[0] == CONST  # no re-warming: the first step runs at the constant level
    assert f[: T - A] == [CONST] * (T - A)
    assert max(f) == CONST and f[-1] == pytest.approx(MIN)
    # through the option dict: start_phase=constant drops the method's warm-up and the cooldown
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.2)
    sched = InfiniteSchedule.from_options(opt, 40, {"start_phase": "constant", "anneal_fraction": 0.25},
                                          warmup_steps=10)
    assert (sched.warmup_steps, sched.cooldown_steps, sched.anneal_steps) == (0, 0, 10)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.2 * 0.5)  # default constant_factor 0.5
    assert sched.boundaries == {"constant": 29, "anneal": 39}


def test_fractions_become_steps_and_boundaries():
    assert infinite_phase_steps(50, warmup=0.1, cooldown=0.2, anneal=0.2) == (5, 10, 10)
    assert infinite_phase_steps(7, warmup=0.5, anneal=0.5) == (3, 0, 3)  # floors never exceed the run
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = InfiniteSchedule.from_fractions(opt, 50, warmup=0.1, cooldown=0.2, anneal=0.2, constant_factor=0.3)
    assert (sched.warmup_steps, sched.cooldown_steps, sched.anneal_steps, sched.anneal_start) == (5, 10, 10, 40)
    assert sched.boundaries == {"warmup": 4, "cooldown": 14, "constant": 39, "anneal": 49}
    opts = check_infinite_options({"cooldown_steps": 3})
    assert opts["cooldown_fraction"] is None and opts["anneal_fraction"] == 0.1  # steps replace the default fraction


# ------------------------------------------------------------------------------------ bad phases


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(warmup_steps=-1), "warmup_steps must be a non-negative"),
        (dict(anneal_steps=2.5), "anneal_steps must be a non-negative whole number"),
        (dict(warmup_steps=10, cooldown_steps=8, anneal_steps=5), "= 23 steps, but the run has 20 steps"),
        (dict(constant_factor=1.5), "constant_factor must be in \\[0, 1\\]"),
        (dict(constant_factor=0.1, min_factor=0.2), r"min_factor \(0.2\) must be in \[0, constant_factor=0.1\]"),
        (dict(min_factor=0.0), "never reaches 0.*annealing: linear"),
        (dict(annealing="cosine"), "Unknown annealing 'cosine'; valid shapes: exponential, linear"),
    ],
)
def test_bad_phases_raise_clear_errors(kwargs, match):
    args = {**PHASES, **kwargs}
    with pytest.raises(ValueError, match=match):
        infinite_factor(0, T, **args)
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match=match):
        InfiniteSchedule(opt, T, **args)


def test_bad_fractions_and_options_raise_clear_errors():
    with pytest.raises(ValueError, match=r"add up to 1.2 > 1"):
        infinite_phase_steps(100, warmup=0.2, cooldown=0.5, anneal=0.5)
    with pytest.raises(ValueError, match=r"cooldown fraction must be in \[0, 1\]"):
        infinite_phase_steps(100, cooldown=-0.1)
    with pytest.raises(ValueError) as err:
        check_infinite_options({"cooldown": 0.1, "constant": 0.5})
    msg = str(err.value)
    assert "['constant', 'cooldown']" in msg and all(key in msg for key in INFINITE_SCHEDULE_KEYS)
    with pytest.raises(ValueError, match="both anneal_fraction and anneal_steps"):
        check_infinite_options({"anneal_fraction": 0.1, "anneal_steps": 4})
    with pytest.raises(ValueError, match="start_phase is 'constant'.*no warm-up and no cooldown"):
        check_infinite_options({"start_phase": "constant", "cooldown_fraction": 0.1})
    with pytest.raises(ValueError, match="Unknown start_phase 'cooldown'; valid phases: warmup, constant"):
        check_infinite_options({"start_phase": "cooldown"})
    with pytest.raises(ValueError, match=r"add up to 1.1 > 1"):
        check_infinite_options({"warmup_fraction": 0.5, "cooldown_fraction": 0.5, "anneal_fraction": 0.1})
    with pytest.raises(ValueError, match="min_factor .* must be in"):
        check_infinite_options({"constant_factor": 0.2, "min_factor": 0.3})
    with pytest.raises(ValueError, match=r"anneal_fraction must be a number in \[0, 1\]"):
        check_infinite_options({"anneal_fraction": 2})


def test_schedule_drives_lr_pickles_and_resumes():
    p = nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([{"params": [p]}, {"params": [nn.Parameter(torch.zeros(1))], "lr": 0.5}], lr=0.1)
    sched = InfiniteSchedule(opt, T, **PHASES)
    lrs = []
    for _ in range(T):
        lrs.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    expected = _factors()
    assert [a for a, _ in lrs] == pytest.approx([0.1 * f for f in expected])
    assert [b for _, b in lrs] == pytest.approx([0.5 * f for f in expected])  # each group's own peak
    pickle.dumps(sched)
    # resume at step 9 (constant phase) from a state dict: the curve continues
    opt2 = torch.optim.SGD([{"params": [p]}, {"params": [nn.Parameter(torch.zeros(1))], "lr": 0.5}], lr=0.1)
    first = InfiniteSchedule(opt2, T, **PHASES)
    for _ in range(9):
        opt2.step()
        first.step()
    opt3 = torch.optim.SGD([{"params": [p]}, {"params": [nn.Parameter(torch.zeros(1))], "lr": 0.5}], lr=0.1)
    resumed = InfiniteSchedule(opt3, T, warmup_steps=1, anneal_steps=1)  # other phases: the state dict wins
    opt3.load_state_dict(opt2.state_dict())  # as Lightning restores a checkpoint: optimizer, then scheduler
    resumed.load_state_dict(first.state_dict())
    assert (resumed.lr_lambdas[0].warmup_steps, resumed.lr_lambdas[0].anneal_steps) == (W, A)
    tail = []
    for _ in range(9, T):
        tail.append(opt3.param_groups[0]["lr"])
        opt3.step()
        resumed.step()
    assert tail == pytest.approx([0.1 * f for f in expected[9:]])


# ------------------------------------------------------------------------------------ SSLMethod + Trainer


class _TinyEncoder(nn.Module):
    out_dim = 16
    in_chans = 1

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 8, 3, stride=2), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _simclr(**kwargs):
    from lightning_ssl.methods import SimCLR

    return SimCLR(_TinyEncoder(), proj_hidden_dim=16, proj_out_dim=8, **kwargs)


def test_method_options_are_validated_at_construction():
    with pytest.raises(ValueError, match="Unknown lr_schedule 'cosine'; valid schedules: warmup_cosine, infinite"):
        _simclr(lr_schedule="cosine")
    with pytest.raises(ValueError, match="infinite_schedule is set but lr_schedule is 'warmup_cosine'"):
        _simclr(infinite_schedule={"anneal_fraction": 0.1})
    with pytest.raises(ValueError, match=r"Unknown infinite_schedule keys \['anneal'\]; valid keys: warmup_fraction"):
        _simclr(lr_schedule="infinite", infinite_schedule={"anneal": 0.1})
    model = _simclr()
    assert model.hparams.lr_schedule == "warmup_cosine" and model.hparams.infinite_schedule is None


def test_trainer_logs_the_infinite_schedule(tmp_path):
    """20 steps on real PneumoniaMNIST: the logged train/lr is lr x infinite_factor(step) at every step, and
    the scheduler Lightning holds is the infinite one."""
    from lightning_ssl.data import ImageDataModule

    L.seed_everything(0, verbose=False)
    peak, total = 0.02, 20
    options = {"warmup_fraction": 0.1, "cooldown_fraction": 0.2, "anneal_fraction": 0.25,
               "constant_factor": 0.4, "min_factor": 0.02}
    model = _simclr(optimizer="sgd", lr=peak, lr_schedule="infinite", infinite_schedule=options)
    data = ImageDataModule("pneumoniamnist", root=str(MEDMNIST), batch_size=8, num_workers=0,
                           device_augmentation=True)
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=total, limit_val_batches=0,
                        logger=CSVLogger(tmp_path, name="lr", version=0), log_every_n_steps=1,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, datamodule=data)
    sched = trainer.lr_scheduler_configs[0].scheduler
    assert isinstance(sched, InfiniteSchedule) and trainer.lr_scheduler_configs[0].interval == "step"
    assert (sched.warmup_steps, sched.cooldown_steps, sched.anneal_steps) == (2, 4, 5)
    with open(tmp_path / "lr" / "version_0" / "metrics.csv") as f:
        logged = [(int(r["step"]), float(r["train/lr"])) for r in csv.DictReader(f) if r.get("train/lr")]
    assert [s for s, _ in logged] == list(range(total))
    expected = [peak * infinite_factor(k, total, warmup_steps=2, cooldown_steps=4, anneal_steps=5,
                                       constant_factor=0.4, min_factor=0.02) for k in range(total)]
    assert [lr for _, lr in logged] == pytest.approx(expected, rel=1e-6)
    lrs = [lr for _, lr in logged]
    assert lrs[1] == pytest.approx(peak) and lrs[5] == pytest.approx(0.4 * peak)  # warm-up and cooldown ends
    assert lrs[14] == pytest.approx(0.4 * peak) and lrs[-1] == pytest.approx(0.02 * peak)


def test_default_schedule_is_unchanged():
    """Without lr_schedule the method builds the same warm-up + cosine schedule as before."""
    model = _simclr(optimizer="sgd", lr=0.1, warmup_epochs=1)
    _, sched = model.build_optimizer_and_schedule(0.1, total_steps=10, steps_per_epoch=4)
    assert type(sched) is WarmupCosineSchedule and (sched.warmup_steps, sched.total_steps) == (4, 10)
    infinite = _simclr(optimizer="sgd", lr=0.1, warmup_epochs=1, lr_schedule="infinite")
    _, sched = infinite.build_optimizer_and_schedule(0.1, total_steps=100, steps_per_epoch=4)
    assert type(sched) is InfiniteSchedule
    assert (sched.warmup_steps, sched.cooldown_steps, sched.anneal_steps) == (4, 10, 10)  # warm-up: warmup_epochs
    with pytest.raises(ValueError, match="do not fit the run.*warmup_epochs"):
        infinite.build_optimizer_and_schedule(0.1, total_steps=12, steps_per_epoch=12)  # warm-up: the whole run


# ------------------------------------------------------------------------------------ LightningCLI


def test_cli_config_with_infinite_schedule_parses_and_runs(tmp_path, monkeypatch, capsys):
    from lightning_ssl.cli import SSLCLI, main

    monkeypatch.setattr(sys, "argv", ["lightning-ssl"])
    monkeypatch.chdir(tmp_path)
    config = yaml.safe_load((REPO / "configs" / "image" / "simclr_pneumoniamnist.yaml").read_text())
    config["model"]["init_args"]["lr_schedule"] = "infinite"
    config["model"]["init_args"]["infinite_schedule"] = {"cooldown_fraction": 0.2, "anneal_fraction": 0.1,
                                                         "constant_factor": 0.3, "annealing": "linear"}
    path = tmp_path / "simclr_infinite.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(SystemExit) as exc:
        main(["fit", "--config", str(path), "--print_config"])
    assert exc.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)["model"]["init_args"]
    assert printed["lr_schedule"] == "infinite"
    assert printed["infinite_schedule"] == config["model"]["init_args"]["infinite_schedule"]

    cli = SSLCLI(args=["fit", "--config", str(path), "--trainer.fast_dev_run=true", "--trainer.logger", "false",
                       "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
                       "--model.init_args.encoder.init_args.name", "test_resnet",
                       "--data.init_args.root", str(MEDMNIST), "--data.init_args.batch_size", "4",
                       "--data.init_args.num_workers", "0"])
    sched = cli.trainer.lr_scheduler_configs[0].scheduler
    assert isinstance(sched, InfiniteSchedule) and sched.annealing == "linear" and sched.constant_factor == 0.3
    assert cli.trainer.global_step == 1


def test_resuming_a_different_schedule_warns_and_keeps_the_saved_one():
    """fit(ckpt_path=...) restores the saved phases; a continual run must load weights, not resume: warned."""
    import warnings

    params = [torch.nn.Parameter(torch.zeros(1))]
    first = InfiniteSchedule(torch.optim.SGD(params, lr=1.0), 100, warmup_steps=10, cooldown_steps=10, anneal_steps=10)
    for _ in range(5):
        first.optimizer.step()
        first.step()
    state = first.state_dict()
    same = InfiniteSchedule(torch.optim.SGD(params, lr=1.0), 100, warmup_steps=10, cooldown_steps=10, anneal_steps=10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        same.load_state_dict(state)  # same phases: silent
    assert same.last_epoch == 5
    other = InfiniteSchedule(torch.optim.SGD(params, lr=1.0), 50, anneal_steps=10)
    with pytest.warns(UserWarning, match="start_phase: constant"):
        other.load_state_dict(state)
    assert other.lr_lambdas[0].total_steps == 100  # the saved schedule is what continues
