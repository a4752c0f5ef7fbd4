"""Self-supervised losses: pure functions and thin ``nn.Module`` wrappers, one file per family.

Every loss that uses batch statistics (contrastive negatives, cross-correlation, covariance)
takes ``gather: bool = True`` and, under DDP, computes the full loss of the global batch on every
rank (inputs gathered with :func:`lightning_ssl.distributed.gather_with_grad`), so that loss values
and gradients equal those of one process on the concatenated batch.
"""

from lightning_ssl.losses.barlow_twins import BarlowTwinsLoss, barlow_twins_loss, cross_correlation
from lightning_ssl.losses.cca_ssg import CCASSGLoss, cca_ssg_loss
from lightning_ssl.losses.chamfer import ChamferDistance, chamfer_distance
from lightning_ssl.losses.byol import BYOLLoss, NegativeCosineSimilarity, byol_loss, negative_cosine_similarity
from lightning_ssl.losses.groco import GroCoLoss, groco_loss, odd_even_sort
from lightning_ssl.losses.mae import MAELoss, mae_loss, norm_pix_target
from lightning_ssl.losses.mixed_barlow_twins import MixedBarlowTwinsLoss, mix_images, mixed_barlow_twins_loss
from lightning_ssl.losses.dino import DINOLoss, dino_teacher_temperature
from lightning_ssl.losses.moco import MoCoV3Loss, mocov3_loss
from lightning_ssl.losses.nt_xent import NTXentLoss, nt_xent_loss
from lightning_ssl.losses.sce import scaled_cosine_error
from lightning_ssl.losses.supcon import SupConLoss, supcon_loss
from lightning_ssl.losses.vicreg import VICRegLoss, vicreg_loss

__all__ = [
    "GroCoLoss",
    "MAELoss",
    "MixedBarlowTwinsLoss",
    "SupConLoss",
    "groco_loss",
    "mae_loss",
    "mix_images",
    "mixed_barlow_twins_loss",
    "norm_pix_target",
    "odd_even_sort",
    "supcon_loss",
    "BYOLLoss",
    "BarlowTwinsLoss",
    "CCASSGLoss",
    "ChamferDistance",
    "DINOLoss",
    "MoCoV3Loss",
    "NTXentLoss",
    "NegativeCosineSimilarity",
    "VICRegLoss",
    "barlow_twins_loss",
    "byol_loss",
    "cca_ssg_loss",
    "chamfer_distance",
    "cross_correlation",
    "dino_teacher_temperature",
    "mocov3_loss",
    "negative_cosine_similarity",
    "nt_xent_loss",
    "scaled_cosine_error",
    "vicreg_loss",
]
