"""The training loop: resumable, seeded, logging losses and throughput.

State lives in RUN_DIR: checkpoint.pt (model, EMA, discriminator, optimisers,
step, RNG states, code usage) written atomically every few minutes and at
exit, so a run killed at any moment resumes from its last checkpoint; log.jsonl
gets one JSON line per log interval and per validation.
"""

from __future__ import annotations

import copy
import json
import math
import os
import signal
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..metrics.lpips import LPIPS
from ..model import ControlGIC, MaskSet
from ..model.weights import load_weights
from ..planner import patch_entropy, plan_from_entropy
from ..ratios import PPM
from .config import TrainConfig
from .data import CropSampler, centre_crops, list_images, split_train_validation
from .losses import PatchDiscriminator, hinge_discriminator_loss, hinge_generator_loss

PAPER_TRAINING_RATIOS = (0.5, 0.4, 0.1)
VALIDATION_RATIOS = ((0.3, 0.6, 0.1), (0.0, 0.5, 0.5))


def sample_ratios_ppm(rng: np.random.Generator, mode: str) -> tuple[int, int, int]:
    """(fine, medium, coarse) in ppm. "mixed" covers the whole range the codec serves."""
    if mode == "paper" or (mode == "mixed" and rng.random() < 0.2):
        fine, medium, coarse = PAPER_TRAINING_RATIOS
    elif mode == "mixed":
        coarse = rng.uniform(0.0, 0.7) if rng.random() < 0.8 else 0.0
        fine = rng.uniform(0.0, 1.0 - coarse)
    else:
        raise ValueError(f"unknown ratio sampling mode {mode!r}")
    fine_ppm, coarse_ppm = round(fine * PPM), round(coarse * PPM)
    return fine_ppm, PPM - fine_ppm - coarse_ppm, coarse_ppm


def masks_for_batch(batch_u8: np.ndarray, ratios: list[tuple[int, int, int]]) -> MaskSet:
    coarse, medium = [], []
    for image, ratio in zip(batch_u8, ratios, strict=True):
        plan = plan_from_entropy(patch_entropy(image), ratio)
        coarse.append(plan.coarse)
        medium.append(plan.medium)
    return MaskSet.from_coarse_medium(
        torch.from_numpy(np.stack(coarse)[:, None]), torch.from_numpy(np.stack(medium)[:, None])
    )


def to_model_input(batch_u8: np.ndarray, device: torch.device, channels_last: bool) -> torch.Tensor:
    x = torch.from_numpy(batch_u8).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0).to(device)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


class Trainer:
    def __init__(self, config: TrainConfig):
        self.config = config
        self.run_dir = Path(config.run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.device = torch.device(config.device)
        if config.threads:
            torch.set_num_threads(config.threads)
        torch.manual_seed(config.seed)

        files = list_images(config.data_dir)
        train_files, val_files = split_train_validation(files, config.validation_images)
        self.sampler = CropSampler(train_files, config.crop_size)
        self.validation_crops = centre_crops(val_files, config.validation_crop_size)

        memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
        self.model = ControlGIC(config.model).to(self.device, memory_format=memory_format)
        self.ema = copy.deepcopy(self.model).requires_grad_(False)
        self.discriminator = PatchDiscriminator().to(self.device, memory_format=memory_format)
        self.lpips = LPIPS.from_dir(config.metric_weights_dir).to(self.device)
        self.opt_g = torch.optim.Adam(self.model.parameters(), lr=config.lr, betas=config.betas)
        self.opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=config.lr, betas=config.betas)
        self.rng = np.random.default_rng(config.seed)
        self.step = 0
        self.crops_seen = 0
        self.train_seconds = 0.0
        self.codebook_initialised = False
        self.code_usage_ema = torch.ones(config.model.codebook_size)
        self._stop = False
        self._resume()

    # ----- state -----------------------------------------------------------------
    def _checkpoint_path(self) -> Path:
        return self.run_dir / "checkpoint.pt"

    def save_checkpoint(self) -> None:
        state = {
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "discriminator": self.discriminator.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "step": self.step,
            "crops_seen": self.crops_seen,
            "train_seconds": self.train_seconds,
            "codebook_initialised": self.codebook_initialised,
            "code_usage_ema": self.code_usage_ema,
            "rng_numpy": json.dumps(self.rng.bit_generator.state),
            "rng_torch": torch.get_rng_state(),
            "config": json.dumps(self.config.to_dict()),
        }
        tmp = self._checkpoint_path().with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, self._checkpoint_path())

    def _resume(self) -> None:
        path = self._checkpoint_path()
        if not path.exists():
            if self.config.init_weights:
                self._init_from_weights(self.config.init_weights)
            return
        # Our own checkpoint, written by save_checkpoint; weights_only refuses pickled code anyway.
        state = torch.load(path, map_location=self.device, weights_only=True)
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.discriminator.load_state_dict(state["discriminator"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.step = int(state["step"])
        self.crops_seen = int(state["crops_seen"])
        self.train_seconds = float(state["train_seconds"])
        self.codebook_initialised = bool(state["codebook_initialised"])
        self.code_usage_ema = state["code_usage_ema"].cpu()
        self.rng.bit_generator.state = json.loads(state["rng_numpy"])
        torch.set_rng_state(state["rng_torch"].cpu())
        self.log({"event": "resumed", "step": self.step})

    def _init_from_weights(self, weights_path: str) -> None:
        """Fine-tune from a weights file: network and EMA start there; optimisers start fresh."""
        loaded = load_weights(weights_path)
        if loaded.config != self.config.model:
            raise ValueError(f"{weights_path} has config {loaded.config}, this run needs {self.config.model}")
        state = loaded.network.state_dict()
        self.model.load_state_dict(state)
        self.ema.load_state_dict(state)
        self.codebook_initialised = True
        self.log({"event": "initialised from weights", "path": weights_path, "model_id": loaded.model_id.hex()})

    def log(self, record: dict) -> None:
        record = {"time": round(time.time(), 1), **record}
        with open(self.run_dir / "log.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")

    # ----- codebook health -----------------------------------------------------------
    @torch.no_grad()
    def _restart_codes(self, latents: torch.Tensor, dead: torch.Tensor) -> int:
        """Move unused codes onto random encoder outputs of this batch (plus a little noise)."""
        count = int(dead.sum())
        if count == 0:
            return 0
        pick = torch.randint(latents.shape[0], (count,))
        noise = 0.01 * latents.std() * torch.randn(count, latents.shape[1])
        codebook = self.model.quantizer.codebook
        codebook.data[dead.to(codebook.device)] = (latents[pick] + noise).to(codebook.device)
        state = self.opt_g.state.get(codebook)
        if state:
            for key in ("exp_avg", "exp_avg_sq"):
                state[key][dead.to(codebook.device)] = 0
        self.code_usage_ema[dead] = 1.0
        return count

    @staticmethod
    def _flat_latents(z: torch.Tensor) -> torch.Tensor:
        return z.detach().permute(0, 2, 3, 1).reshape(-1, z.shape[1]).float().cpu()

    # ----- one step ----------------------------------------------------------------
    def train_step(self) -> dict:
        cfg = self.config
        batch = self.sampler.sample(self.rng, cfg.batch_size)
        ratios = [sample_ratios_ppm(self.rng, cfg.ratio_sampling) for _ in range(cfg.batch_size)]
        masks = masks_for_batch(batch, ratios)
        masks = MaskSet(*(m.to(self.device) for m in (masks.fine, masks.medium, masks.coarse)))
        x = to_model_input(batch, self.device, cfg.channels_last)

        if not self.codebook_initialised:
            with torch.no_grad():
                latents = torch.cat([self._flat_latents(z) for z in self.model.encoder(x)])
            self._restart_codes(latents, torch.ones(cfg.model.codebook_size, dtype=torch.bool))
            self.codebook_initialised = True

        use_gan = self.step >= cfg.gan_start_step and cfg.gan_weight > 0
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=cfg.bf16)
        with autocast:
            out = self.model(x, masks)
            x_hat = out.reconstruction.float()
            mse = F.mse_loss(x_hat, x)
            lpips = self.lpips(x_hat, x).mean()
            loss = cfg.mse_weight * mse + cfg.lpips_weight * lpips + out.vq_loss
            gan_g = torch.zeros(())
            if use_gan:
                gan_g = hinge_generator_loss(self.discriminator(x_hat))
                loss = loss + cfg.gan_weight * gan_g
        self.opt_g.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.opt_g.step()

        gan_d = torch.zeros(())
        if use_gan:
            with autocast:
                gan_d = hinge_discriminator_loss(self.discriminator(x), self.discriminator(x_hat.detach()))
            self.opt_d.zero_grad(set_to_none=True)
            gan_d.backward()
            self.opt_d.step()

        self._update_ema()
        self._track_usage(out.indices, out)
        if cfg.dead_code_interval and (self.step + 1) % cfg.dead_code_interval == 0:
            with torch.no_grad():
                latents = torch.cat([self._flat_latents(z) for z in self.model.encoder(x)])
            restarted = self._restart_codes(latents, self.code_usage_ema < cfg.dead_code_min_usage)
        else:
            restarted = 0
        return {
            "loss": loss.item(),
            "mse": mse.item(),
            "lpips": lpips.item(),
            "vq": out.vq_loss.item(),
            "gan_g": gan_g.item(),
            "gan_d": gan_d.item(),
            "restarted": restarted,
        }

    @torch.no_grad()
    def _update_ema(self) -> None:
        decay = min(self.config.ema_decay, (1 + self.step) / (10 + self.step))
        for ema_p, p in zip(self.ema.parameters(), self.model.parameters(), strict=True):
            ema_p.lerp_(p, 1 - decay)
        # Codes restarted mid-run would be smeared by averaging: the codebook is copied as is.
        self.ema.quantizer.codebook.copy_(self.model.quantizer.codebook)

    @torch.no_grad()
    def _track_usage(self, indices, out) -> None:
        k = self.config.model.codebook_size
        hits = sum(
            torch.bincount(i.flatten().cpu(), minlength=k) for i in (indices.fine, indices.medium, indices.coarse)
        )
        self.code_usage_ema.mul_(0.99).add_(0.01 * hits.float())

    # ----- validation ------------------------------------------------------------------
    @torch.no_grad()
    def validate(self) -> dict:
        result = {}
        crops = self.validation_crops
        x = to_model_input(crops, self.device, self.config.channels_last)
        for ratio in VALIDATION_RATIOS:
            ppm = tuple(round(r * PPM) for r in ratio)
            ppm = (ppm[0], PPM - ppm[0] - ppm[2], ppm[2])
            masks = masks_for_batch(crops, [ppm] * len(crops))
            masks = MaskSet(*(m.to(self.device) for m in (masks.fine, masks.medium, masks.coarse)))
            x_hat = self.ema.decode_indices(self.ema.encode_indices(x), masks)
            mse = F.mse_loss((x_hat + 1) * 127.5, (x + 1) * 127.5, reduction="none").mean(dim=(1, 2, 3))
            psnr = (10 * torch.log10(255.0**2 / mse.clamp_min(1e-10))).mean().item()
            lpips = self.lpips(x_hat, x).mean().item()
            key = "-".join(f"{r:g}" for r in ratio)
            result[f"val_psnr_{key}"] = round(psnr, 3)
            result[f"val_lpips_{key}"] = round(lpips, 4)
        used = int((self.code_usage_ema > self.config.dead_code_min_usage).sum())
        result["codes_in_use"] = used
        return result

    # ----- main loop ---------------------------------------------------------------------
    def _request_stop(self, signum, frame) -> None:
        self._stop = True

    def run(self) -> None:
        cfg = self.config
        signal.signal(signal.SIGTERM, self._request_stop)
        signal.signal(signal.SIGINT, self._request_stop)
        last_checkpoint = time.time()
        window: list[dict] = []
        window_start = time.time()
        bar = tqdm(total=cfg.max_steps, initial=self.step, disable=None, dynamic_ncols=True)
        while self.step < cfg.max_steps and not self._stop:
            t0 = time.time()
            stats = self.train_step()
            self.train_seconds += time.time() - t0
            self.step += 1
            self.crops_seen += cfg.batch_size
            window.append(stats)
            bar.update(1)
            if self.step % cfg.log_every == 0:
                elapsed = time.time() - window_start
                mean = {k: sum(s[k] for s in window) / len(window) for k in window[0]}
                mean["restarted"] = sum(s["restarted"] for s in window)
                record = {"step": self.step, **{k: round(v, 5) for k, v in mean.items()}}
                record["crops_per_s"] = round(len(window) * cfg.batch_size / elapsed, 2)
                self.log(record)
                bar.set_postfix(loss=f"{mean['loss']:.4f}", lpips=f"{mean['lpips']:.3f}", cps=record["crops_per_s"])
                window, window_start = [], time.time()
            if cfg.validate_every and self.step % cfg.validate_every == 0:
                self.log({"step": self.step, **self.validate()})
            if time.time() - last_checkpoint > cfg.checkpoint_minutes * 60:
                self.save_checkpoint()
                last_checkpoint = time.time()
            if not math.isfinite(stats["loss"]):
                self.log({"event": "non-finite loss", "step": self.step})
                raise FloatingPointError(f"loss became {stats['loss']} at step {self.step}")
        bar.close()
        self.save_checkpoint()
        self.log({"event": "stopped", "step": self.step})
