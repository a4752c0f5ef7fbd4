"""Modality-agnostic SSL methods (LightningModules)."""

from lightning_ssl.methods.barlow_twins import BarlowTwins
from lightning_ssl.methods.base import NonFiniteLossError, SSLMethod, ViewOutputs
from lightning_ssl.methods.byol import BYOL
from lightning_ssl.methods.cca_ssg import CCASSG
from lightning_ssl.methods.dgi import DGI
from lightning_ssl.methods.dino import DINO
from lightning_ssl.methods.eegformer import EEGFormer
from lightning_ssl.methods.graphmae import GraphMAE
from lightning_ssl.methods.groco import GroCo
from lightning_ssl.methods.mae import MAE
from lightning_ssl.methods.masked_features import MaskedFeatureModeling
from lightning_ssl.methods.mixed_barlow_twins import MixedBarlowTwins
from lightning_ssl.methods.moco import MoCoV3
from lightning_ssl.methods.momentum import MomentumSSLMethod
from lightning_ssl.methods.myow import MYOW
from lightning_ssl.methods.point_mae import PointMAE
from lightning_ssl.methods.simclr import SimCLR
from lightning_ssl.methods.simsiam import SimSiam
from lightning_ssl.methods.supcon import SupCon
from lightning_ssl.methods.vicreg import VICReg

METHODS = {cls.__name__: cls for cls in (SimCLR, MoCoV3, BYOL, SimSiam, BarlowTwins, VICReg, DINO, CCASSG, DGI, GraphMAE, PointMAE, MaskedFeatureModeling, EEGFormer,
                                          MixedBarlowTwins, MYOW, GroCo, SupCon, MAE)}

__all__ = [
    "BYOL", "CCASSG", "DGI", "DINO", "EEGFormer", "GraphMAE", "GroCo", "MAE", "METHODS", "MYOW", "MixedBarlowTwins", "MaskedFeatureModeling", "PointMAE", "BarlowTwins", "MoCoV3", "MomentumSSLMethod", "NonFiniteLossError",
    "SSLMethod", "SimCLR", "SimSiam", "SupCon", "VICReg", "ViewOutputs",
]
