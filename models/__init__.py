"""The built-in models (weights, model cards, boundaries, training recipes), shipped as package data."""
