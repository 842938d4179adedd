"""Constants shared by the networks and everything that feeds or names them (torch-free,
so that the CLI can import them without loading torch)."""
from __future__ import annotations

BGR_MEAN: tuple[float, float, float] = (104.0, 117.0, 123.0)
"""RetinaFace input (biubug6 checkpoints, our training): BGR pixels (0..255) minus this mean,
per channel in B, G, R order; std 1."""

MTCNN_STAGES: tuple[str, str, str] = ("pnet", "rnet", "onet")
"""MTCNN's three networks in cascade order (P-Net -> R-Net -> O-Net); the stage names used
in weights files, exported graphs, runners and ``facesieve train mtcnn --stage``."""
