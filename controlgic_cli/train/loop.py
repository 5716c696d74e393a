"""The training loop: resumable, seeded, logging losses and throughput.

State lives in RUN_DIR: checkpoint.pt (model, EMA, discriminator, optimisers,
step, RNG states, code usage) written atomically every few minutes and at
exit, so a run killed at any moment resumes from its last checkpoint; log.jsonl
gets one JSON line per log interval and per validation.
"""

from __future__ import annotations

import copy
import gc
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

from ..model import ControlGIC, MaskSet
from ..model.weights import load_weights
from ..planning.ratios import PPM
from .config import TrainConfig
from .data import CropSampler, centre_crops, list_images, split_train_validation
from .grow import grow_checkpoint
from .losses import PatchDiscriminator, hinge_discriminator_loss, hinge_generator_loss
from .parallel import setup, teardown
from .validation import Judge, evaluate, masks_for_batch, to_model_input

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


def _plain_strides_for_per_channel_parameters(module: torch.nn.Module) -> None:
    """(1, C, 1, 1) parameters get channels_last strides their gradients do not have.

    Same memory either way, but DDP compares strides and warns on every step.
    """
    for parameter in module.parameters():
        if parameter.dim() == 4 and parameter.shape[0] == 1 and parameter.shape[2:] == (1, 1):
            parameter.data = parameter.data.clone(memory_format=torch.contiguous_format)


class Trainer:
    def __init__(self, config: TrainConfig):
        self.config = config
        self.run_dir = Path(config.run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.replicas, self.device = setup(config.device)
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
        self.judge = Judge(config.metric_weights_dir, self.device)
        self.lpips = self.judge.lpips
        if config.dists_weight > 0 and self.judge.dists is None:
            raise ValueError(f"dists_weight > 0 needs DISTS weights in {config.metric_weights_dir}")
        self.opt_g = torch.optim.Adam(self.model.parameters(), lr=config.lr, betas=config.betas)
        self.opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=config.lr, betas=config.betas)
        # The modules the losses run through: DDP wrappers that average gradients over
        # replicas, or the modules themselves in a single process.
        self.train_model: torch.nn.Module = self.model
        self.train_discriminator: torch.nn.Module = self.discriminator
        if self.replicas.distributed:
            _plain_strides_for_per_channel_parameters(self.model)
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_model = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
            self.train_discriminator = torch.nn.parallel.DistributedDataParallel(self.discriminator, device_ids=ids)
        # Each replica draws its own crops and ratios; a single process keeps the plain seed.
        rank = self.replicas.rank
        self.rng = np.random.default_rng([config.seed, rank] if self.replicas.distributed else config.seed)
        self.step = 0
        self.crops_seen = 0
        self.train_seconds = 0.0
        # Codes that get encoder outputs as their first values at the next step: all of
        # them in a fresh run, the added ones after a codebook growth, none on resume.
        self.codes_to_seed = torch.ones(config.model.codebook_size, dtype=torch.bool)
        self.code_usage_ema = torch.ones(config.model.codebook_size)
        self._stop = False
        self._resume()

    # ----- state -----------------------------------------------------------------
    def _checkpoint_path(self) -> Path:
        return self.run_dir / "checkpoint.pt"

    def save_checkpoint(self) -> None:
        """Every replica must call this (it gathers their RNG states); rank 0 writes the file."""
        self.replicas.assert_in_sync(self.model)
        rng_states = self.replicas.gather(json.dumps(self.rng.bit_generator.state))
        if not self.replicas.is_main:
            return
        state = {
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "discriminator": self.discriminator.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "step": self.step,
            "crops_seen": self.crops_seen,
            "train_seconds": self.train_seconds,
            "codebook_initialised": not bool(self.codes_to_seed.any()),
            "code_usage_ema": self.code_usage_ema,
            "rng_numpy": rng_states[0],
            "rng_numpy_ranks": rng_states,
            "rng_torch": torch.get_rng_state(),
            "config": json.dumps(self.config.to_dict()),
        }
        tmp = self._checkpoint_path().with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, self._checkpoint_path())

    def _resume(self) -> None:
        path = self._checkpoint_path()
        if path.exists():
            # Our own checkpoint, written by save_checkpoint; weights_only refuses pickled code anyway.
            state = torch.load(path, map_location=self.device, weights_only=True)
            self._load_state(state)
            rng_states = state.get("rng_numpy_ranks", [state["rng_numpy"]])
            if len(rng_states) == self.replicas.world_size:
                self.rng.bit_generator.state = json.loads(rng_states[self.replicas.rank])
            else:
                # A different number of replicas than the run was saved with: fresh, distinct streams.
                self.rng = np.random.default_rng([self.config.seed, self.replicas.rank, self.step])
            torch.set_rng_state(state["rng_torch"].cpu())
            self.log({"event": "resumed", "step": self.step, "replicas": self.replicas.world_size})
        elif self.config.init_checkpoint:
            self._init_from_checkpoint(self.config.init_checkpoint)
        elif self.config.init_weights:
            self._init_from_weights(self.config.init_weights)

    def _load_state(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.discriminator.load_state_dict(state["discriminator"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.step = int(state["step"])
        self.crops_seen = int(state["crops_seen"])
        self.train_seconds = float(state["train_seconds"])
        self.codes_to_seed[:] = not state["codebook_initialised"]
        self.code_usage_ema = state["code_usage_ema"].cpu()

    def _init_from_checkpoint(self, checkpoint_path: str) -> None:
        """Continue another run's checkpoint as a new run, grown to this run's model if larger (train/grow.py).

        Everything the GAN balance depends on (discriminator, both optimisers'
        moments) carries over, which restarting from a weights file would lose.
        Crops and ratios are drawn afresh (seeded by the step), not replayed.
        """
        state = torch.load(checkpoint_path, map_location=self.device, weights_only=True)
        old_config = TrainConfig.from_dict(json.loads(state["config"])).model
        added = grow_checkpoint(state, old_config, self.model)
        self._load_state(state)
        self.codes_to_seed |= added
        self.rng = np.random.default_rng([self.config.seed, self.replicas.rank, self.step])
        self.log(
            {
                "event": "initialised from checkpoint",
                "path": str(checkpoint_path),
                "step": self.step,
                "checkpoint_model": json.loads(old_config.to_json()),
            }
        )

    def _init_from_weights(self, weights_path: str) -> None:
        """Continue from a weights file: network and EMA start there, optimisers start fresh.

        The step, crops and hours recorded in the weights carry on, so schedules keyed
        to the step (the GAN start) and the model card count the whole history.
        """
        loaded = load_weights(weights_path)
        if loaded.config != self.config.model:
            raise ValueError(f"{weights_path} has config {loaded.config}, this run needs {self.config.model}")
        state = loaded.network.state_dict()
        self.model.load_state_dict(state)
        self.ema.load_state_dict(state)
        self.codes_to_seed[:] = False
        history = json.loads(loaded.metadata.get("training", "{}"))
        self.step = int(history.get("steps", 0))
        self.crops_seen = int(history.get("crops_seen", 0))
        self.train_seconds = 3600.0 * float(history.get("train_hours", 0.0))
        self.log(
            {
                "event": "initialised from weights",
                "path": weights_path,
                "model_id": loaded.model_id.hex(),
                "step": self.step,
            }
        )

    def log(self, record: dict) -> None:
        if not self.replicas.is_main:
            return
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
        # Replicas saw different latents; rank 0's choice is the one every replica keeps.
        self.replicas.broadcast_(codebook.data)
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

        if self.codes_to_seed.any():
            with torch.no_grad():
                latents = torch.cat([self._flat_latents(z) for z in self.model.encoder(x)])
            self._restart_codes(latents, self.codes_to_seed)
            self.codes_to_seed[:] = False

        lr = cfg.lr_at(self.step)
        for group in (*self.opt_g.param_groups, *self.opt_d.param_groups):
            group["lr"] = lr
        use_gan = self.step >= cfg.gan_start_step and cfg.gan_weight > 0
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=cfg.bf16)
        with autocast:
            out = self.train_model(x, masks)
            x_hat = out.reconstruction.float()
            mse = F.mse_loss(x_hat, x)
            with torch.autocast(self.device.type, enabled=False):
                # In float32 even in bf16 runs: LPIPS differences are small and bf16 blurs their gradient.
                lpips = self.lpips(x_hat, x).mean()
            # DISTS stays under autocast: in float32 its VGG16 would double the step's time.
            dists = self._dists_loss(x_hat, x) if cfg.dists_weight > 0 else torch.zeros(())
            reconstruction = cfg.mse_weight * mse + cfg.lpips_weight * lpips
            loss = reconstruction + cfg.dists_weight * dists + out.vq_loss
            gan_g = torch.zeros(())
            gan_scale = 0.0
            if use_gan:
                # The discriminator is only a judge here: no gradients for its weights.
                self.discriminator.requires_grad_(False)
                gan_g = hinge_generator_loss(self.discriminator(x_hat))
                self.discriminator.requires_grad_(True)
                gan_scale = cfg.gan_weight
                if cfg.gan_adaptive:
                    # Balanced against pixel + LPIPS only: DISTS's gradient is several times
                    # theirs, and counting it would quietly strengthen the GAN term as well.
                    gan_scale *= self._adaptive_gan_scale(reconstruction, gan_g)
                loss = loss + gan_scale * gan_g
        self.opt_g.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.opt_g.step()

        gan_d = torch.zeros(())
        if use_gan:
            with autocast:
                # Real and fake in one pass (one DDP reduction); the norms are per sample.
                logits_real, logits_fake = self.train_discriminator(torch.cat([x, x_hat.detach()])).chunk(2)
                gan_d = hinge_discriminator_loss(logits_real, logits_fake)
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
            "dists": dists.item(),
            "vq": out.vq_loss.item(),
            "gan_g": gan_g.item(),
            "gan_d": gan_d.item(),
            "gan_scale": gan_scale,
            "restarted": restarted,
            "lr": lr,
        }

    def _dists_loss(self, x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        crops = self.config.dists_crops or x.shape[0]
        # DISTS reads [0, 1] images; the network works on [-1, 1].
        return self.judge.dists((x_hat[:crops] + 1) / 2, (x[:crops] + 1) / 2).float().mean()

    def _adaptive_gan_scale(self, reconstruction_loss: torch.Tensor, gan_loss: torch.Tensor) -> float:
        """taming's balance: ||grad rec|| / ||grad GAN|| at the decoder's last layer.

        The GAN term then pulls with a fixed fraction (gan_weight) of the
        reconstruction's strength whatever the discriminator's logit scale.
        """
        last = self.model.decoder.conv_out.weight
        rec_grad = torch.autograd.grad(reconstruction_loss, last, retain_graph=True)[0]
        gan_grad = torch.autograd.grad(gan_loss, last, retain_graph=True)[0]
        # Replicas agree on one scale (their gradients here are local, before DDP's average).
        norms = self.replicas.sum_(torch.stack([rec_grad.norm(), gan_grad.norm()]).detach().cpu().double())
        return float((norms[0] / (norms[1] + 1e-4)).clamp(0.0, 1e4))

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
        # Summed over replicas, so every replica restarts the same codes.
        self.replicas.sum_(hits)
        self.code_usage_ema.mul_(0.99).add_(0.01 * hits.float())

    # ----- validation ------------------------------------------------------------------
    def validate(self) -> dict:
        result = evaluate(
            self.ema, self.validation_crops, VALIDATION_RATIOS, self.judge, self.device, self.config.channels_last
        )
        used = int((self.code_usage_ema > self.config.dead_code_min_usage).sum())
        result["codes_in_use"] = used
        return result

    # ----- main loop ---------------------------------------------------------------------
    def _request_stop(self, signum, frame) -> None:
        self._stop = True

    def run(self) -> None:
        # Stop requests end the run cleanly (a checkpoint); the caller's handlers come back afterwards,
        # so a process that trains in-line (the tests, a notebook) can still be interrupted.
        previous = {sig: signal.signal(sig, self._request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        finished = False
        try:
            self._train()
            finished = True
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self._release_replicas(clean=finished)

    def _release_replicas(self, clean: bool) -> None:
        # DDP wrappers keep the process group (and gloo's worker threads) alive; left
        # to interpreter shutdown they can abort the process (SIGABRT, "terminate called
        # without an active exception"), so they go before the group is destroyed.
        self.train_model, self.train_discriminator = self.model, self.discriminator
        gc.collect()
        teardown(self.replicas, wait_for_others=clean)

    def _train(self) -> None:
        cfg = self.config
        last_checkpoint = time.time()
        window: list[dict] = []
        window_start = time.time()
        bar = tqdm(
            total=cfg.max_steps,
            initial=self.step,
            disable=None if self.replicas.is_main else True,
            dynamic_ncols=True,
        )
        while self.step < cfg.max_steps and not self._stop:
            t0 = time.time()
            stats = self.train_step()
            self.train_seconds += time.time() - t0
            self.step += 1
            self.crops_seen += cfg.batch_size * self.replicas.world_size
            window.append(stats)
            bar.update(1)
            if self.step % cfg.log_every == 0:
                elapsed = time.time() - window_start
                mean = {k: sum(s[k] for s in window) / len(window) for k in window[0]}
                mean["restarted"] = sum(s["restarted"] for s in window)
                rounded = {k: v if isinstance(v, int) else float(f"{v:.5g}") for k, v in mean.items()}
                record = {"step": self.step, **rounded}
                record["crops_per_s"] = round(len(window) * cfg.batch_size * self.replicas.world_size / elapsed, 2)
                self.log(record)
                bar.set_postfix(loss=f"{mean['loss']:.4f}", lpips=f"{mean['lpips']:.3f}", cps=record["crops_per_s"])
                window, window_start = [], time.time()
            if self.replicas.is_main and cfg.validate_every and self.step % cfg.validate_every == 0:
                self.log({"step": self.step, **self.validate()})
            # Agreed by all replicas, so they stop, save and fail on the same step.
            checkpoint_due = self.replicas.is_main and time.time() - last_checkpoint > cfg.checkpoint_minutes * 60
            self._stop, checkpoint_due, diverged = self.replicas.any(
                self._stop, checkpoint_due, not math.isfinite(stats["loss"])
            )
            if diverged:
                self.log({"event": "non-finite loss", "step": self.step})
                raise FloatingPointError(f"loss became non-finite at step {self.step} (rank {self.replicas.rank})")
            if checkpoint_due:
                self.save_checkpoint()
                last_checkpoint = time.time()
        bar.close()
        self.save_checkpoint()
        self.log({"event": "stopped", "step": self.step})
