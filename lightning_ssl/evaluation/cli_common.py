"""What the ``lightning-ssl evaluate-*`` commands share: the config / checkpoint / output arguments, building
the model and datamodule from a training config, loading a checkpoint with clear errors, printing results."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch


def evaluation_parser(prog: str, description: str | None, config_help: str) -> argparse.ArgumentParser:
    """A parser with ``--config``, ``--ckpt`` and ``--out``; commands add their own options."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--config", required=True, help=config_help)
    parser.add_argument("--ckpt", default=None, help="checkpoint to evaluate; omit to score the random-init encoder")
    parser.add_argument("--out", default=None, help="write the results as JSON")
    return parser


def load_from_config(parser: argparse.ArgumentParser, args: argparse.Namespace, overrides: list[str]) -> Any:
    """The training config through the CLI (``overrides`` as in ``lightning-ssl fit``), with ``args.ckpt``'s
    weights loaded; a missing, non-Lightning or mismatching checkpoint ends in ``parser.error``."""
    from lightning_ssl.cli import SSLCLI

    cli = SSLCLI(args=["--config", args.config, "--trainer.logger", "false", *overrides], run=False)
    if args.ckpt is not None:
        path = Path(args.ckpt)
        if not path.is_file():
            parser.error(f"Checkpoint not found: {path}. Training writes them under <log dir>/checkpoints/.")
        state = torch.load(path, map_location="cpu", weights_only=False).get("state_dict")
        if state is None:
            parser.error(f"{path} is not a Lightning checkpoint (no 'state_dict').")
        try:
            cli.model.load_state_dict(state)
        except RuntimeError as err:
            parser.error(f"The checkpoint does not match the config's model ({err}). Pass the config it was trained with.")
    return cli


def report(results: dict[str, Any], out: str | None) -> None:
    """Print ``results`` as JSON and write them to ``out`` when given."""
    text = json.dumps(results, indent=2, default=float)
    print(text)
    if out:
        Path(out).write_text(text)
