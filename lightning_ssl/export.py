"""Export a trained encoder as a plain ``state_dict`` for the bare timm/torchvision model."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch


def encoder_state_dict(checkpoint: dict[str, Any], teacher: bool = False) -> tuple[dict[str, torch.Tensor], str]:
    """The encoder's weights from a Lightning checkpoint, and the prefix they were stored under.

    Encoders that wrap a network in ``.model`` (``TimmEncoder``, ``TorchvisionEncoder``) give the
    bare network's ``state_dict``; other encoders give the encoder module's own ``state_dict``.
    """
    state = checkpoint.get("state_dict")
    if state is None:
        raise ValueError("Not a Lightning checkpoint: it has no 'state_dict'. Pass the .ckpt written by training.")
    base = "teacher.encoder." if teacher else "encoder."
    for prefix in (base + "model.", base):
        sd = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if sd:
            return sd, prefix
    if teacher:
        raise ValueError("This checkpoint has no EMA teacher (teacher.encoder.*); export without --teacher.")
    raise ValueError("No encoder weights (encoder.*) in this checkpoint; was it written by a lightning_ssl method?")


def export_encoder(ckpt_path: str | Path, out_path: str | Path, teacher: bool = False) -> dict[str, Any]:
    """Write the encoder ``state_dict`` to ``out_path`` and a JSON sidecar describing how to rebuild it.

    The sidecar (``<out>.json``) records the encoder class, its timm/torchvision name, input channels
    and stem, so that ``lightning_ssl.encoders.build_bare_model(kind, name, in_chans, small_stem)``
    returns a model that loads the weights with ``strict=True``.
    """
    ckpt_path, out_path = Path(ckpt_path), Path(out_path)
    if not ckpt_path.is_file():
        raise FileNotFoundError(f"Checkpoint not found: {ckpt_path}. Training writes them under <log dir>/checkpoints/.")
    checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    sd, prefix = encoder_state_dict(checkpoint, teacher=teacher)
    spec = dict(checkpoint.get("lightning_ssl_encoder", {}))
    cls = spec.get("class", "")
    spec["kind"] = "timm" if cls.endswith("TimmEncoder") else "torchvision" if cls.endswith("TorchvisionEncoder") else "custom"
    spec.update(source=str(ckpt_path), prefix=prefix, teacher=teacher, num_tensors=len(sd))
    out_path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(sd, out_path)
    out_path.with_suffix(out_path.suffix + ".json").write_text(json.dumps(spec, indent=2))
    return spec


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="lightning-ssl export",
        description="Write the encoder of a lightning_ssl checkpoint as a plain state_dict that loads into "
        "the bare timm/torchvision model with strict=True (see the .json written beside it).",
    )
    parser.add_argument("--ckpt", required=True, help="Lightning checkpoint (.ckpt), e.g. .../checkpoints/last.ckpt")
    parser.add_argument("--out", required=True, help="output file, e.g. encoder.pt")
    parser.add_argument("--teacher", action="store_true", help="export the EMA teacher's encoder (BYOL, MoCo v3, DINO)")
    args = parser.parse_args(argv)
    try:
        spec = export_encoder(args.ckpt, args.out, teacher=args.teacher)
    except (FileNotFoundError, ValueError) as err:
        parser.error(str(err))
    print(f"wrote {args.out} ({spec['num_tensors']} tensors, {spec['kind']} {spec.get('name', '')}) and {args.out}.json")
    if spec["kind"] in ("timm", "torchvision"):
        print(
            "load with: from lightning_ssl.encoders import build_bare_model; "
            f"m = build_bare_model({spec['kind']!r}, {spec.get('name')!r}, in_chans={spec.get('in_chans', 3)}, "
            f"small_stem={spec.get('small_stem', False)}); m.load_state_dict(torch.load({str(args.out)!r}))"
        )
    return 0
