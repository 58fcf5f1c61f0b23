"""FFHQ-style face alignment and its landmark backends."""
