"""Batched projection of images into W / W+ / noise, its losses, schedules, presets and scores."""
