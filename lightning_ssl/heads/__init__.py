from lightning_ssl.heads.mlp import ACTIVATIONS, DINOHead, head_out_dim, mlp, projection_head

__all__ = ["ACTIVATIONS", "DINOHead", "head_out_dim", "mlp", "projection_head"]
