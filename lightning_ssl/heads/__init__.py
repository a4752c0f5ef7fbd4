from lightning_ssl.heads.mlp import DINOHead, mlp, projection_head

__all__ = ["DINOHead", "mlp", "projection_head"]
