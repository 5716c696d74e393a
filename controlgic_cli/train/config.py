"""Training settings (separate from the model's sizes, which live in ModelConfig)."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from ..model import ModelConfig


@dataclass
class TrainConfig:
    data_dir: str = ""
    run_dir: str = "runs/base"
    metric_weights_dir: str = ""
    # Start a new run from a shipped weights file (ignored when RUN_DIR has a checkpoint).
    init_weights: str = ""
    # Start a new run from another run's checkpoint.pt: network, EMA, discriminator,
    # optimisers and history carry on (ignored when RUN_DIR has a checkpoint). The model
    # may be larger than the checkpoint's (train/grow.py): a larger codebook_size adds
    # codes, seeded from encoder outputs at the first step; more encoder_blocks or
    # decoder_blocks add residual blocks that start as identities.
    init_checkpoint: str = ""
    model: ModelConfig = field(default_factory=ModelConfig)
    seed: int = 0
    device: str = "cpu"
    threads: int = 0  # 0: torch default
    crop_size: int = 128
    batch_size: int = 8
    max_steps: int = 200_000
    lr: float = 2e-4
    # Cosine decay of both learning rates from lr to lr * lr_final_fraction over
    # lr_decay_steps steps starting at lr_decay_start (0: constant lr). Computed
    # from the step alone, so a resumed run lands on the same schedule.
    lr_decay_start: int = 0
    lr_decay_steps: int = 0
    lr_final_fraction: float = 0.1
    betas: tuple[float, float] = (0.5, 0.9)
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    # Loss weights (paper Eq. 9-11): beta * (MSE + LPIPS) + VQ + gan_weight * GAN.
    mse_weight: float = 1.0
    lpips_weight: float = 1.0
    # Optional DISTS term. Its VGG16 pass over 8 crops costs 1.2x a whole base step
    # on a CPU in bf16 (2.4x in float32), so it may run on only the first
    # dists_crops crops of each batch (0: all of them).
    dists_weight: float = 0.0
    dists_crops: int = 0
    gan_weight: float = 0.1
    gan_start_step: int = 30_000
    # Scale the GAN term so its gradient at the decoder's last layer is gan_weight
    # times the reconstruction's (taming's adaptive weight); off: a fixed gan_weight.
    gan_adaptive: bool = False
    # Ratios per sample: "mixed" samples a ratio per crop over the whole range,
    # "paper" always uses the paper's training ratio (0.5, 0.4, 0.1).
    ratio_sampling: str = "mixed"
    dead_code_interval: int = 200
    dead_code_min_usage: float = 0.03  # EMA hits per step below which a code is restarted
    validation_images: int = 16
    validation_crop_size: int = 256
    validate_every: int = 1000
    checkpoint_minutes: float = 5.0
    log_every: int = 20
    bf16: bool = False
    channels_last: bool = True

    @classmethod
    def from_file(cls, path: str | Path, **overrides) -> TrainConfig:
        raw = json.loads(Path(path).read_text())
        raw.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_dict(raw)

    @classmethod
    def from_dict(cls, raw: dict) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"unknown training settings: {unknown}")
        raw = dict(raw)
        if isinstance(raw.get("model"), dict):
            raw["model"] = ModelConfig.from_json(json.dumps({**dataclasses.asdict(ModelConfig()), **raw["model"]}))
        if "betas" in raw:
            raw["betas"] = tuple(raw["betas"])
        return cls(**raw)

    def lr_at(self, step: int) -> float:
        if not self.lr_decay_start or step < self.lr_decay_start:
            return self.lr
        progress = min(1.0, (step - self.lr_decay_start) / max(1, self.lr_decay_steps))
        cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.lr * (self.lr_final_fraction + (1.0 - self.lr_final_fraction) * cosine)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
