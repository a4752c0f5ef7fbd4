from lightning_ssl.heads.mlp import ACTIVATIONS, DINOHead, head_out_dim, mlp, projection_head
from lightning_ssl.heads.vector_quantizer import Quantized, VectorQuantizer

__all__ = ["ACTIVATIONS", "DINOHead", "Quantized", "VectorQuantizer", "head_out_dim", "mlp", "projection_head"]
