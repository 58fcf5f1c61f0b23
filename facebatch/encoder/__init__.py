"""Encoders: image -> W+ for a given generator (training; the network and its file live in facebatch.nets.encoder)."""
