"""``lightning-ssl``: LightningCLI entry point.

``lightning-ssl fit|validate|test|predict --config configs/...yaml`` with methods (subclasses of
:class:`~lightning_ssl.methods.SSLMethod`) and datamodules selectable by class name, and
``lightning-ssl export --ckpt ... --out encoder.pt`` to write the trained encoder, and
``lightning-ssl evaluate-graph --config ... --ckpt ...`` for the graph evaluation protocols, and
``lightning-ssl evaluate-points --config ... --ckpt ...`` for the point-cloud ones, and
``lightning-ssl evaluate-eeg --config ... --ckpt ...`` for the EEG probes, and
``lightning-ssl evaluate-images --config ... --ckpt ...`` for the image protocols (label fractions,
transfer, OOD).
"""

from __future__ import annotations

import sys

import lightning as L
from lightning.pytorch.cli import LightningCLI

import lightning_ssl.callbacks  # noqa: F401  (register callbacks for class-name lookup)
import lightning_ssl.data  # noqa: F401
import lightning_ssl.encoders  # noqa: F401
from lightning_ssl.methods import SSLMethod

USAGE = """usage: lightning-ssl {fit,validate,test,predict} --config CONFIG.yaml [--key value ...]
       lightning-ssl export --ckpt CHECKPOINT.ckpt --out encoder.pt [--teacher]
       lightning-ssl evaluate-graph --config CONFIG.yaml [--ckpt CHECKPOINT.ckpt] [--tasks node,cluster,link]
       lightning-ssl evaluate-points --config CONFIG.yaml [--ckpt CHECKPOINT.ckpt] [--tasks classification,segmentation]
       lightning-ssl evaluate-eeg --config CONFIG.yaml [--ckpt CHECKPOINT.ckpt] [--features encoder,band_power] [--tasks eegmmidb]
       lightning-ssl evaluate-images --config CONFIG.yaml [--ckpt CHECKPOINT.ckpt] [--fractions 0.01,0.1,1] [--seeds 0,1,2]
                     [--knn-k 20] [--transfer DATASET[:ROOT] ...] [--ood DATASET[:ROOT] ...] [--random-init] [--out results.md]

Methods: SimCLR, MoCoV3, BYOL, SimSiam, BarlowTwins, VICReg, DINO, CCASSG, DGI, GraphMAE, PointMAE,
MaskedFeatureModeling, EEGFormer, MixedBarlowTwins, MYOW, GroCo, MAE, and SupCon (supervised: reads labels)
(--model NAME).
Datamodules: ImageDataModule, GraphDataModule, PointCloudDataModule, EEGDataModule (--data NAME). `lightning-ssl fit --help` lists every option;
`--print_config` prints the resolved config."""


class SSLCLI(LightningCLI):
    """LightningCLI with SSL methods and datamodules in subclass mode."""

    def __init__(self, args: list[str] | None = None, run: bool = True) -> None:
        super().__init__(
            SSLMethod,
            L.LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            auto_configure_optimizers=False,
            save_config_kwargs={"overwrite": True},
            args=args,
            run=run,
        )


def main(argv: list[str] | None = None) -> int:
    from_python = argv is not None
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "export":
        from lightning_ssl.export import main as export_main

        return export_main(argv[1:])
    if argv and argv[0] == "evaluate-graph":
        from lightning_ssl.evaluation.graph_tasks import main as evaluate_graph_main

        return evaluate_graph_main(argv[1:])
    if argv and argv[0] == "evaluate-points":
        from lightning_ssl.evaluation.points import main as evaluate_points_main

        return evaluate_points_main(argv[1:])
    if argv and argv[0] == "evaluate-eeg":
        from lightning_ssl.evaluation.eeg import main as evaluate_eeg_main

        return evaluate_eeg_main(argv[1:])
    if argv and argv[0] == "evaluate-images":
        from lightning_ssl.evaluation.protocol import main as evaluate_images_main

        return evaluate_images_main(argv[1:])
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        if not argv:
            return 2
    SSLCLI(args=argv if from_python else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
