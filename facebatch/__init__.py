"""facebatch: batch StyleGAN2 projection, editing and reconstruction scoring for face datasets."""

__version__ = "0.1.0"
