"""Shipped model weights (installed as the package controlgic_cli.shipped_weights)."""
