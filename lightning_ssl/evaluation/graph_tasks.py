"""Run the graph evaluation protocols on a trained method: from Python and as ``lightning-ssl evaluate-graph``.

``evaluate_graph(model, datamodule)`` embeds the clean graph the encoder trained on (encoder in eval
mode, no gradients) and runs, on those frozen embeddings:

- ``node``: node classification with the datamodule's split (public, or random with ``split_seed``),
  :func:`~lightning_ssl.evaluation.graph.node_classification` over ``seeds`` probe seeds;
- ``cluster``: k-means node clustering (NMI, ARI) over ``seeds``;
- ``link``: link prediction on the held-out validation and test edges of ``RandomLinkSplit``; needs
  ``link_split: true`` in the datamodule, so that the encoder never saw those edges.

CLI::

    lightning-ssl evaluate-graph --config configs/graph/grace_cora.yaml --ckpt runs/.../last.ckpt \\
        --data.init_args.root ../shared/data/planetoid --tasks node,cluster --out results.json
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from lightning_ssl.evaluation.cli_common import evaluation_parser, load_from_config, report
from lightning_ssl.evaluation.graph import link_prediction, masks_to_split, node_classification, node_clustering

TASKS = ("node", "cluster", "link")


@torch.no_grad()
def embed_graph(encoder: nn.Module, graph: Any, device: torch.device | str | None = None) -> torch.Tensor:
    """Frozen node embeddings ``[N, D]`` (float32, CPU) of ``graph``; train/eval flags are restored."""
    device = torch.device(device) if device is not None else next(encoder.parameters()).device
    modes = [(m, m.training) for m in encoder.modules()]
    encoder.eval()
    try:
        # a shallow copy: PyG's Data.to moves in place, and the caller's graph must stay where it is
        return encoder(graph.__copy__().to(device)).float().cpu()
    finally:
        for m, mode in modes:
            m.training = mode


def evaluate_graph(
    model: nn.Module,
    datamodule: Any,
    tasks: Sequence[str] = ("node", "cluster"),
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    probe_kwargs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Evaluate a method's (or a bare encoder's) frozen embeddings on a :class:`GraphDataModule`'s graph.

    Returns ``{"node": {...}, "cluster": {...}, "link": {"val": {...}, "test": {...}}}`` for the tasks asked.
    Raises ``ValueError`` for unknown tasks, a graph without labels (node/cluster) or ``link`` without a
    link split.
    """
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise ValueError(f"Unknown graph evaluation task(s) {unknown}; valid: {', '.join(TASKS)}.")
    encoder = getattr(model, "encoder", model)
    datamodule.setup("fit")
    graph = datamodule.train_graph
    z = embed_graph(encoder, graph)
    y = getattr(graph, "y", None)
    out: dict[str, Any] = {}
    if ("node" in tasks or "cluster" in tasks) and y is None:
        raise ValueError("Labels missing: node classification and clustering need node labels (data.y); "
                         "evaluate link prediction only (tasks=['link']).")
    if "node" in tasks:
        name = "public" if datamodule.split == "public" else f"random (split_seed {datamodule.split_seed})"
        split = masks_to_split(graph.train_mask, graph.val_mask, graph.test_mask, name=name)
        out["node"] = node_classification(z, y, split, probe_seeds=list(seeds), **(probe_kwargs or {}))
    if "cluster" in tasks:
        out["cluster"] = node_clustering(z, y, seeds=list(seeds))
    if "link" in tasks:
        if datamodule.link_data is None:
            raise ValueError("Link prediction needs held-out edges the encoder never saw: train and evaluate with "
                             "data.link_split: true (RandomLinkSplit; the encoder trains on the remaining graph).")
        _, val, test = datamodule.link_data
        out["link"] = {name: link_prediction(z, d.pos_edge_label_index, d.neg_edge_label_index)
                       for name, d in (("val", val), ("test", test))}
    return out


def main(argv: list[str] | None = None) -> int:
    """``lightning-ssl evaluate-graph --config CFG --ckpt CKPT [--tasks node,cluster,link] [--seeds 0,1,2]``;
    further ``--key value`` arguments override the config as in ``lightning-ssl fit``."""
    parser = evaluation_parser("lightning-ssl evaluate-graph", main.__doc__, "the training config (configs/graph/...yaml)")
    parser.add_argument("--tasks", default="node,cluster", help=f"comma-separated, from {', '.join(TASKS)}")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--probe-lr", type=float, default=0.01, help="node classification probe: Adam learning rate")
    parser.add_argument("--probe-weight-decay", type=float, default=0.0, help="probe weight decay (1e-4: GraphMAE, CCA-SSG)")
    parser.add_argument("--probe-epochs", type=int, default=300, help="probe epochs (test at the best validation epoch)")
    args, overrides = parser.parse_known_args(argv)
    cli = load_from_config(parser, args, overrides)
    probe = dict(lr=args.probe_lr, weight_decay=args.probe_weight_decay, epochs=args.probe_epochs)
    results = evaluate_graph(cli.model, cli.datamodule, tasks=args.tasks.split(","),
                             seeds=[int(s) for s in args.seeds.split(",")], probe_kwargs=probe)
    report(results, args.out)
    return 0
