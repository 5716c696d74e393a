"""Encoder choices that leave the format alone, offered by the CLI without importing the network.

Tunes (`--tune`): how the encoder picks indices for the same plan and size.

  perceptual  the nearest code to each latent, as the decoder was trained (keeps texture)
  psnr        a search for codes that decode closer to the pixels (refine.py)

Planners (`--planner`): how the encoder scores patches to choose their granularity.

  measured    distortion gains from decoding every granularity (measured.py; three decoder passes)
  entropy     the paper's patch spatial entropy (planner.py; no decoder pass)
"""

from ..errors import OptionsError

TUNES = ("perceptual", "psnr")
PLANNERS = ("measured", "entropy")
DEFAULT_PLANNER = "measured"


def check_tune_and_planner(tune: str, planner: str) -> None:
    """OptionsError for a tune or planner that is not one of these."""
    if tune not in TUNES:
        raise OptionsError(f"unknown tune {tune!r} (use {' or '.join(TUNES)})")
    if planner not in PLANNERS:
        raise OptionsError(f"unknown planner {planner!r} (use {' or '.join(PLANNERS)})")
