"""StyleGAN2 networks, checkpoint readers, the model registry and cache, perceptual networks."""
