"""Editing directions (InterFaceGAN boundaries, SeFa), edits, mixing applications, NADA."""
