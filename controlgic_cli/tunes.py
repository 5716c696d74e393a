"""Encoder tunes (`--tune`): how the encoder picks indices for the same plan and size.

  perceptual  the nearest code to each latent, as the decoder was trained (keeps texture)
  psnr        a search for codes that decode closer to the pixels (refine.py)

A module of its own, free of torch, so the CLI can offer the choices without
importing the network.
"""

TUNES = ("perceptual", "psnr")
