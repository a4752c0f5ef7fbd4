"""Show which codebook patterns a vector-quantised EEG tokenizer learned, per class (EEGFormer's
interpretability view: Chen et al. 2024, https://arxiv.org/abs/2401.10278)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger

from lightning_ssl.evaluation.eeg_codes import CodebookAccumulator, check_codebook_method, codebook_figure

_NO_LABELS = ("LogCodebookPatterns needs labelled validation windows (set data label_map/label_maps); the datamodule "
              "{name} has num_classes=None.")


class LogCodebookPatterns(L.Callback):
    """Log the codebook patterns of a method with a codebook (:class:`~lightning_ssl.methods.EEGFormer`) on the
    validation windows every ``every_n_epochs`` epochs.

    Every validation batch is tokenised (``pl_module.tokenize``, one extra encoder pass) and its raw patches
    (``pl_module.encoder.patchify``) are accumulated per class (``batch.target``; negative: ignored). At the end
    of the epoch the statistics are summed over DDP ranks and logged: the image ``codebook/patterns``
    (:func:`~lightning_ssl.evaluation.eeg_codes.codebook_figure`: ``P(code | class)`` of the ``max_codes`` most
    used codes above their mean patches) to every TensorBoard logger from rank 0, and the scalars
    ``codebook/val_perplexity`` and ``codebook/val_used_codes``. Not run during the sanity check.

    The number of classes comes from the datamodule's ``num_classes`` (without a datamodule it grows to the
    largest label seen); ``class_names`` default to the EEGMMIDB names with the ``eegmmidb`` label maps, else
    ``"class i"``.
    """

    def __init__(self, every_n_epochs: int = 1, max_codes: int = 16, class_names: Sequence[str] | None = None) -> None:
        if every_n_epochs < 1 or max_codes < 1:
            raise ValueError(f"LogCodebookPatterns needs every_n_epochs >= 1 and max_codes >= 1, got every_n_epochs="
                             f"{every_n_epochs}, max_codes={max_codes}.")
        self.every_n_epochs, self.max_codes = int(every_n_epochs), int(max_codes)
        self.class_names = None if class_names is None else [str(n) for n in class_names]
        self._acc: CodebookAccumulator | None = None
        self._collecting = False

    def _classes(self, trainer: L.Trainer) -> tuple[int | None, list[str] | None]:
        dm = getattr(trainer, "datamodule", None)
        if dm is None or not hasattr(dm, "num_classes"):
            return (None if self.class_names is None else len(self.class_names)), self.class_names
        num = dm.num_classes
        if num is None:
            raise ValueError(_NO_LABELS.format(name=type(dm).__name__))
        names = self.class_names
        if names is None:
            from lightning_ssl.data.eeg_labels import EEGMMIDB_CLASSES, EEGMMIDB_LABEL_MAPS

            if getattr(dm, "label_maps", None) == EEGMMIDB_LABEL_MAPS and int(num) == len(EEGMMIDB_CLASSES):
                names = list(EEGMMIDB_CLASSES)
        if names is not None and len(names) != int(num):
            raise ValueError(f"LogCodebookPatterns: {len(names)} class_names {names} but the datamodule has "
                             f"num_classes={int(num)}. Give one name per class (or leave class_names unset).")
        return int(num), names

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        check_codebook_method(pl_module, "LogCodebookPatterns")
        if stage in ("fit", "validate"):
            self._classes(trainer)  # fail fast without labels
        self._acc, self._collecting = None, False

    def _due(self, trainer: L.Trainer) -> bool:
        """Every ``every_n_epochs``-th epoch while fitting; always in ``trainer.validate``."""
        return trainer.state.fn != "fit" or (trainer.current_epoch + 1) % self.every_n_epochs == 0

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._collecting = not trainer.sanity_checking and self._due(trainer)
        if self._collecting:
            num, names = self._classes(trainer)
            self._acc = CodebookAccumulator(pl_module.quantizer.num_codes, pl_module.encoder.patch_size, num, names)

    def on_validation_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not self._collecting or dataloader_idx != 0 or self._acc is None:
            return
        views, target = getattr(batch, "views", None), getattr(batch, "target", None)
        if not views or target is None:
            raise ValueError("LogCodebookPatterns needs labelled validation windows (set data label_map/label_maps): "
                             "the validation batch has " + ("no views." if not views else "no target."))
        x = views[0]
        self._acc.update(pl_module.tokenize(x), pl_module.encoder.patchify(x), target)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._collecting or self._acc is None:
            return
        self._collecting = False
        self._acc.all_reduce(pl_module.device)  # a collective: every rank
        report = self._acc.report()
        # identical on every rank after the all-reduce, so no sync is needed
        pl_module.log("codebook/val_perplexity", report.perplexity, sync_dist=False)
        pl_module.log("codebook/val_used_codes", float(report.used_codes), sync_dist=False)
        if trainer.global_rank == 0:
            loggers = [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
            if loggers:
                image = codebook_figure(report, self.max_codes)
                for logger in loggers:
                    logger.experiment.add_image("codebook/patterns", image, trainer.global_step)
        self._acc.reset()
