"""Modality-agnostic SSL methods (LightningModules)."""

from lightning_ssl.methods.barlow_twins import BarlowTwins
from lightning_ssl.methods.base import NonFiniteLossError, SSLMethod, ViewOutputs
from lightning_ssl.methods.byol import BYOL
from lightning_ssl.methods.cca_ssg import CCASSG
from lightning_ssl.methods.dgi import DGI
from lightning_ssl.methods.dino import DINO
from lightning_ssl.methods.eegformer import EEGFormer
from lightning_ssl.methods.graphmae import GraphMAE
from lightning_ssl.methods.masked_features import MaskedFeatureModeling
from lightning_ssl.methods.moco import MoCoV3
from lightning_ssl.methods.momentum import MomentumSSLMethod
from lightning_ssl.methods.point_mae import PointMAE
from lightning_ssl.methods.simclr import SimCLR
from lightning_ssl.methods.simsiam import SimSiam
from lightning_ssl.methods.vicreg import VICReg

METHODS = {cls.__name__: cls for cls in (SimCLR, MoCoV3, BYOL, SimSiam, BarlowTwins, VICReg, DINO, CCASSG, DGI, GraphMAE, PointMAE, MaskedFeatureModeling, EEGFormer)}

__all__ = [
    "BYOL", "CCASSG", "DGI", "DINO", "EEGFormer", "GraphMAE", "METHODS", "MaskedFeatureModeling", "PointMAE", "BarlowTwins", "MoCoV3", "MomentumSSLMethod", "NonFiniteLossError",
    "SSLMethod", "SimCLR", "SimSiam", "VICReg", "ViewOutputs",
]
