"""Training model v2 (model/latent_network.py) on two CPU cores.

The TAEF2 encoder is frozen, so every training image is encoded once and its
latent cached (`cache`); training then never runs the encoder.
  stage "latent": analysis + FSQ + synthesis learn to rebuild the latent (MSE
                  at H/8: 1/64 of the pixels, so thousands of steps an hour);
  stage "pixel":  the decoder joins in, and the loss is pixel MSE + LPIPS on
                  the image crop the latent crop came from.
Every granularity mix is trained: each sample gets random masks (coarse
cells, then medium cells among the rest), as the codec's planner may choose.

RUN_DIR holds checkpoint.pt (model, optimiser, step, RNG), written atomically
every few minutes and at exit, and log.jsonl; a killed run resumes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import time
from pathlib import Path

import click
import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from ..errors import ModelError
from ..metrics.lpips import LPIPS
from ..model.latent_network import LatentControlGIC, LatentModelConfig
from ..model.taef2 import LATENT_STRIDE
from ..model.weights import load_weights, save_weights
from .data import list_images, load_rgb

VALIDATION_IMAGES = ("kodim01", "kodim08", "kodim13", "kodim23")
CHECKPOINT_SECONDS = 300


def load_backbone(model: LatentControlGIC, taef2_dir: Path) -> None:
    """The pretrained TAEF2 tensors into the backbone encoder and decoder (strict)."""
    load_taef2(model.backbone_encoder, model.backbone_decoder, taef2_dir)


def load_taef2(encoder: torch.nn.Module, decoder: torch.nn.Module, taef2_dir: Path) -> None:
    """The pretrained TAEF2 tensors into a taef2_encoder() and a taef2_decoder() (strict)."""
    for part, module in (("encoder", encoder), ("decoder", decoder)):
        tensors = load_file(str(taef2_dir / f"taef2_{part}.safetensors"))
        module.load_state_dict({k: v.float() for k, v in tensors.items()}, strict=True)


def random_masks(rng: np.random.Generator, batch: int, latent_side: int) -> list[torch.Tensor]:
    """Masks (fine H/4, medium H/8, coarse H/16) for a square latent crop: random coarse, then medium, cells."""
    coarse = np.zeros((batch, 1, latent_side // 2, latent_side // 2), np.float32)
    medium = np.zeros((batch, 1, latent_side, latent_side), np.float32)
    for i in range(batch):
        # Half the samples are pure, so every granularity also learns to stand alone.
        kind = rng.integers(6)
        p_coarse, p_medium = {0: (0.0, 0.0), 1: (0.0, 1.0), 2: (1.0, 0.0)}.get(kind, (rng.random(), rng.random()))
        coarse[i] = rng.random(coarse[i].shape) < p_coarse
        medium_cells = rng.random(medium[i].shape) < p_medium
        medium[i] = medium_cells & (np.kron(coarse[i, 0], np.ones((2, 2))) == 0)
    return LatentControlGIC.masks(torch.from_numpy(coarse), torch.from_numpy(medium))


class LatentCache:
    """Training images (uint8, sides cut to multiples of 16) and their TAEF2 latents (float16)."""

    def __init__(self, images: list[np.ndarray], latents: list[torch.Tensor]):
        self.images = images
        self.latents = latents

    @classmethod
    def build(
        cls, model: LatentControlGIC, data_dir: Path, max_side: int, every: int = 1, seed: int = 0
    ) -> LatentCache:
        """Every `every`-th image, cut to one random window of at most max_side (the encoder is most of the work)."""
        images, latents = [], []
        device = next(model.parameters()).device
        rng = np.random.default_rng(seed)
        files = list_images(data_dir)[::every]
        with torch.no_grad():
            for number, path in enumerate(files):
                rgb = load_rgb(path)
                h, w = (min(s - s % 16, max_side) for s in rgb.shape[:2])
                top, left = rng.integers(rgb.shape[0] - h + 1), rng.integers(rgb.shape[1] - w + 1)
                rgb = rgb[top : top + h, left : left + w].copy()
                if number % 50 == 0:
                    click.echo(f"{number}/{len(files)}", err=True)
                x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 127.5 - 1.0
                images.append(rgb)
                latents.append(model.encode_latent(x.to(device))[0].half().cpu())
        return cls(images, latents)

    def save(self, path: Path) -> None:
        torch.save({"images": [torch.from_numpy(i) for i in self.images], "latents": self.latents}, path)

    @classmethod
    def load(cls, path: Path) -> LatentCache:
        raw = torch.load(path)
        return cls([i.numpy() for i in raw["images"]], raw["latents"])

    def sample(
        self, rng: np.random.Generator, batch: int, crop: int, model: LatentControlGIC
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Aligned crops: latents (B, 32, crop/8, crop/8) float, images (B, 3, crop, crop) in [-1, 1].

        A share of them are synthetic images (synthetic_image), which the model's backbone encodes here.
        """
        side = crop // LATENT_STRIDE
        latents, images = [], []
        while len(latents) < batch:
            if rng.random() < SYNTHETIC_SHARE:
                image = torch.from_numpy(synthetic_image(rng, crop).copy()).permute(2, 0, 1)
                device = next(model.parameters()).device
                with torch.no_grad():
                    latents.append(model.encode_latent(image[None].to(device).float() / 127.5 - 1.0)[0].float().cpu())
                images.append(image)
                continue
            n = rng.integers(len(self.latents))
            latent = self.latents[n]
            if min(latent.shape[1:]) < side:
                continue
            top, left = rng.integers(latent.shape[1] - side + 1), rng.integers(latent.shape[2] - side + 1)
            latents.append(latent[:, top : top + side, left : left + side].float())
            y, x = top * LATENT_STRIDE, left * LATENT_STRIDE
            images.append(torch.from_numpy(self.images[n][y : y + crop, x : x + crop]).permute(2, 0, 1))
        return torch.stack(latents), torch.stack(images).float() / 127.5 - 1.0


# Flat colours and small text are where a photo-trained model fails first (hue shifts, squiggles), and
# photos hold few of either: this share of each batch is drawn instead, encoded as it is used.
SYNTHETIC_SHARE = 0.125
CUBE_CORNERS = np.array([[r, g, b] for r in (0, 255) for g in (0, 255) for b in (0, 255)], np.uint8)


def synthetic_image(rng: np.random.Generator, size: int) -> np.ndarray:
    """uint8 (size, size, 3): flat regions of saturated or random colours, half the time with lines of text."""
    from PIL import Image, ImageDraw

    def colour() -> tuple[int, ...]:
        pick = CUBE_CORNERS[rng.integers(len(CUBE_CORNERS))] if rng.random() < 0.6 else rng.integers(0, 256, 3)
        return tuple(int(c) for c in pick)

    image = Image.new("RGB", (size, size), colour())
    draw = ImageDraw.Draw(image)
    for _ in range(rng.integers(0, 4)):
        x0, y0 = (int(v) for v in rng.integers(0, size, 2))
        x1, y1 = (int(v) for v in rng.integers(0, size, 2))
        draw.rectangle((min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)), fill=colour())
    if rng.random() < 0.5:
        letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,"
        ink = colour()
        for line in range(int(rng.integers(1, size // 12))):
            text = "".join(letters[i] for i in rng.integers(0, len(letters), 24))
            draw.text((int(rng.integers(-20, 8)), 2 + line * 12), text, fill=ink)
    return np.asarray(image)


class Validation:
    """PSNR, LPIPS and raw bits per pixel of a few Kodak images with every token at one granularity.

    The backbone encoder is frozen, so each image's latent is computed once.
    """

    def __init__(self, model: LatentControlGIC, kodak: Path, lpips: LPIPS):
        self.lpips = lpips
        self.images, self.latents = [], []
        with torch.no_grad():
            for name in VALIDATION_IMAGES:
                rgb = load_rgb(kodak / f"{name}.png")
                x = torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None].float() / 127.5 - 1.0
                x = x.to(next(model.parameters()).device)
                self.images.append(x)
                self.latents.append(model.encode_latent(x))

    def __call__(self, model: LatentControlGIC) -> dict[str, float]:
        results: dict[str, float] = {}
        model.eval()
        with torch.no_grad():
            for granularity, name in enumerate(("fine", "medium", "coarse")):
                psnrs, distances = [], []
                for x, latent in zip(self.images, self.latents, strict=True):
                    h, w = x.shape[-2] // 16, x.shape[-1] // 16
                    coarse = torch.full((1, 1, h, w), float(granularity == 2), device=x.device)
                    medium = torch.full((1, 1, 2 * h, 2 * w), float(granularity == 1), device=x.device)
                    y = model(latent, model.masks(coarse, medium))[1].clamp(-1.0, 1.0)
                    y = ((y + 1) * 127.5).round() / 127.5 - 1
                    psnrs.append(float(10 * torch.log10(4.0 / F.mse_loss(y, x))))
                    distances.append(float(self.lpips(x, y)))
                bits = model.config.groups[granularity] * math.log2(model.quantizers[granularity].codes_per_group)
                results[f"{name}_psnr"] = round(float(np.mean(psnrs)), 3)
                results[f"{name}_lpips"] = round(float(np.mean(distances)), 4)
                results[f"{name}_raw_bpp"] = round(bits / (4, 8, 16)[granularity] ** 2, 4)
        model.train()
        return results


@click.group()
def main() -> None:
    """Train model v2: cache latents, then the latent and pixel stages."""


@main.command()
@click.option("--data-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True)
@click.option("--taef2", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--max-side", type=int, default=256, show_default=True, help="Window cut from each image.")
@click.option("--every", type=int, default=1, show_default=True, help="Take every N-th image of the folder.")
@click.option("--threads", type=int, default=2, show_default=True)
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:1 ...")
def cache(data_dir: Path, taef2: Path, output: Path, max_side: int, every: int, threads: int, device: str) -> None:
    """Encode every training image once with the frozen TAEF2 encoder."""
    torch.set_num_threads(threads)
    model = LatentControlGIC(LatentModelConfig())
    load_backbone(model, taef2)
    model = model.to(device)
    started = time.time()
    built = LatentCache.build(model.eval(), data_dir, max_side, every)
    output.parent.mkdir(parents=True, exist_ok=True)
    built.save(output)
    click.echo(f"{len(built.images)} images cached in {time.time() - started:.0f} s -> {output}")


@main.command()
@click.option("--cache-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True)
@click.option(
    "--taef2",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="The pretrained backbone; needed only by a new run that has no --init-weights.",
)
@click.option(
    "--init-weights",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A new run starts from these model v2 weights (an export) instead of TAEF2 and fresh adapters.",
)
@click.option("--metric-weights", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True)
@click.option(
    "--kodak",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Folder holding the validation images (kodim01, 08, 13, 23); without it there is no validation.",
)
@click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--stage", type=click.Choice(["latent", "pixel"]), required=True)
@click.option("--steps", type=int, required=True, help="Train until this step (counted over both stages).")
@click.option("--batch", type=int, default=8, show_default=True)
@click.option("--crop", type=int, default=128, show_default=True)
@click.option("--lr", type=float, default=1e-3, show_default=True, help="Adam's learning rate for the adapters.")
@click.option(
    "--mse-weight", type=float, default=10.0, show_default=True, help="Pixel stage: weight of MSE in [-1, 1]."
)
@click.option("--latent-weight", type=float, default=1.0, show_default=True, help="Pixel stage: latent MSE.")
@click.option(
    "--decoder-lr-scale", type=float, default=0.1, show_default=True, help="Pixel stage: the decoder's rate / --lr."
)
@click.option("--validate-every", type=int, default=500, show_default=True)
@click.option(
    "--max-minutes",
    type=float,
    help="Also stop (saving, as at --steps) after this many minutes of training: for a lent machine's fixed time.",
)
@click.option("--threads", type=int, default=2, show_default=True)
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:1 ...")
@click.option("--bf16", is_flag=True, help="bfloat16 autocast: for CUDA (and CPUs with AMX), never other CPUs.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--size",
    type=click.Choice(["default", "tiny"]),
    default="default",
    show_default=True,
    help="LatentModelConfig: the shipped sizes, or a tiny network for tests.",
)
@click.option("--groups", help="A new run's FSQ groups per token, fine,medium,coarse (e.g. 2,3,3).")
@click.option(
    "--levels-by-granularity",
    help="A new run's FSQ levels for fine/medium/coarse, e.g. 8,5,5,5/3,3,3,3/3,3,3,3 (default: the same for all).",
)
def run(
    cache_file,
    taef2,
    init_weights,
    metric_weights,
    kodak,
    run_dir,
    stage,
    steps,
    batch,
    crop,
    lr,
    mse_weight,
    latent_weight,
    decoder_lr_scale,
    validate_every,
    max_minutes,
    threads,
    device,
    bf16,
    seed,
    size,
    groups,
    levels_by_granularity,
) -> None:
    """Train (or resume) a run of one stage."""
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    checkpoint_path = run_dir / "checkpoint.pt"
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise click.UsageError(f"--device {device}: this torch sees no CUDA device")
    resuming = checkpoint_path.exists()
    state = torch.load(checkpoint_path, weights_only=False, map_location="cpu") if resuming else None
    if init_weights is not None and not resuming:
        model = model_from_weights(init_weights)
        config = model.config
    else:
        # A resumed run keeps the sizes it was started with; a new one takes --size and the overrides.
        config = (
            LatentModelConfig.from_json(state["config"])
            if resuming
            else new_run_config(size, groups, levels_by_granularity)
        )
        model = LatentControlGIC(config)
        if not resuming:
            if taef2 is None:
                raise click.UsageError("a new run needs --taef2 (the pretrained backbone) or --init-weights")
            load_backbone(model, taef2)
    if resuming:
        # Layers added since the checkpoint (zero-initialised, so the network computes the same) start fresh.
        missing, unexpected = model.load_state_dict(state["model"], strict=False)
        if unexpected or any(not name.endswith("skip.weight") and not name.endswith("skip.bias") for name in missing):
            raise click.ClickException(f"checkpoint does not fit: missing {missing[:3]}, unexpected {unexpected[:3]}")
        if missing:
            click.echo(f"new zero-initialised layers: {', '.join(missing)}")
    model = model.to(device)
    # channels_last: oneDNN convolutions on a CPU run faster in this layout than in the default one.
    model = model.to(memory_format=torch.channels_last)
    model.backbone_encoder.requires_grad_(False)
    model.backbone_decoder.requires_grad_(stage == "pixel")
    # The pretrained decoder moves more slowly than the adapters, which start from scratch.
    adapters = [*model.analysis.parameters(), *model.synthesis.parameters()]
    groups = [{"params": adapters, "lr": lr}]
    if stage == "pixel":
        groups.append({"params": list(model.backbone_decoder.parameters()), "lr": lr * decoder_lr_scale})
    optimiser = torch.optim.Adam(groups)
    step, rng = 0, np.random.default_rng(seed)
    if resuming:
        step = state["step"]
        if state["stage"] == stage:
            rng.bit_generator.state = state["rng"]
            try:
                optimiser.load_state_dict(state["optimiser"])
            except ValueError:
                click.echo("the optimiser's parameter groups changed: its state starts afresh")
            # The saved state holds the old learning rates; a resumed run takes the ones asked for now (a decay).
            for group, wanted in zip(optimiser.param_groups, groups, strict=True):
                group["lr"] = wanted["lr"]
        click.echo(f"resumed at step {step} (stage {state['stage']} -> {stage})")
    if step >= steps:
        click.echo(f"already at step {step}: nothing to do")
        return
    data = LatentCache.load(cache_file)
    lpips = LPIPS.from_dir(metric_weights).to(device)
    validate = Validation(model, kodak, lpips) if kodak is not None else None
    log = (run_dir / "log.jsonl").open("a")

    def save() -> None:
        state = {
            "model": model.state_dict(),
            "optimiser": optimiser.state_dict(),
            "step": step,
            "stage": stage,
            "rng": rng.bit_generator.state,
            "config": config.to_json(),
        }
        torch.save(state, run_dir / "checkpoint.tmp")
        os.replace(run_dir / "checkpoint.tmp", checkpoint_path)

    stop = []
    # SIGTERM (a kill, a lent machine's end) stops at the next step and saves; the caller's handler comes
    # back afterwards, so a process that runs this in-line (the tests) can still be stopped.
    previous_handler = signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    try:
        last_save, window, started = time.time(), [], time.time()
        model.train()
        deadline = time.time() + max_minutes * 60 if max_minutes is not None else math.inf
        while step < steps and not stop and time.time() < deadline:
            latents, images = data.sample(rng, batch, crop, model)
            latents = latents.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            images = images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            masks = [m.to(device) for m in random_masks(rng, batch, crop // LATENT_STRIDE)]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                loss, parts = training_loss(
                    model, stage, latents, images, masks, lpips, mse_weight=mse_weight, latent_weight=latent_weight
                )
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            step += 1
            window.append(parts)
            if step % 50 == 0:
                mean = {k: float(np.mean([p[k] for p in window])) for k in window[0]}
                record = {"step": step, "stage": stage, **mean, "s_per_step": (time.time() - started) / len(window)}
                log.write(json.dumps(record) + "\n")
                log.flush()
                window, started = [], time.time()
            if validate is not None and step % validate_every == 0:
                log.write(json.dumps({"step": step, "stage": stage, **validate(model)}) + "\n")
                log.flush()
                started = time.time()
            if time.time() - last_save > CHECKPOINT_SECONDS:
                save()
                last_save = time.time()
        save()
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
    if validate is not None:
        log.write(json.dumps({"step": step, "stage": stage, "final": True, **validate(model)}) + "\n")
    log.close()


def training_loss(
    model: LatentControlGIC,
    stage: str,
    latents: torch.Tensor,
    images: torch.Tensor,
    masks: list[torch.Tensor],
    lpips: LPIPS,
    mse_weight: float,
    latent_weight: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """One batch's loss and its parts: latent MSE (stage latent), or weighted pixel MSE + LPIPS + latent MSE."""
    if stage == "latent":
        loss = F.mse_loss(model.rebuild(latents, masks).float(), latents)
        return loss, {"latent_mse": loss.item()}
    rebuilt, decoded = model(latents, masks)
    rebuilt, decoded = rebuilt.float(), decoded.float()
    mse = F.mse_loss(decoded, images)
    distance = lpips(decoded, images).float().mean()
    # The latent term keeps a direct signal on the adapters, which the decoder's gradients reach weakly.
    latent_mse = F.mse_loss(rebuilt, latents)
    loss = mse_weight * mse + distance + latent_weight * latent_mse
    return loss, {"mse": mse.item(), "lpips": distance.item(), "latent_mse": latent_mse.item()}


def new_run_config(size: str, groups: str | None, levels_by_granularity: str | None) -> LatentModelConfig:
    """--size's LatentModelConfig with --groups and --levels-by-granularity, when given, in place."""
    config = LatentModelConfig.tiny() if size == "tiny" else LatentModelConfig()
    try:
        if groups is not None:
            config = dataclasses.replace(config, groups=tuple(int(g) for g in groups.split(",")))
        if levels_by_granularity is not None:
            levels = tuple(tuple(int(v) for v in part.split(",")) for part in levels_by_granularity.split("/"))
            config = dataclasses.replace(config, levels_by_granularity=levels)
    except (ValueError, ModelError) as exc:
        raise click.BadParameter(str(exc), param_hint="--groups / --levels-by-granularity") from None
    return config


def model_from_weights(path: Path) -> LatentControlGIC:
    """A trainable (float32) model v2 from an exported weights file, backbone included."""
    try:
        loaded = load_weights(path).network
    except ModelError as exc:
        raise click.ClickException(str(exc)) from None
    if not isinstance(loaded, LatentControlGIC):
        raise click.ClickException(f"{path} holds model v1 weights; --init-weights takes model v2 weights")
    model = LatentControlGIC(loaded.config)
    model.load_state_dict({name: tensor.float() for name, tensor in loaded.state_dict().items()})
    return model


def count_group_usage(model: LatentControlGIC, data: LatentCache) -> dict[str, list[list[int]]]:
    """How often each code of each FSQ group is used over the cached training latents, plus one (no zero counts)."""
    counts = [torch.ones(q.groups, q.codes_per_group, dtype=torch.int64) for q in model.quantizers]
    with torch.no_grad():
        for latent in data.latents:
            pre = model.analysis(latent[None].float())
            for table, quantizer, z in zip(counts, model.quantizers, pre, strict=True):
                indices = quantizer.indices(z)[0].flatten(1)
                for group in range(quantizer.groups):
                    table[group] += torch.bincount(indices[group], minlength=quantizer.codes_per_group)
    return {name: table.tolist() for name, table in zip(("fine", "medium", "coarse"), counts, strict=True)}


@main.command()
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True)
@click.option("--cache-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--threads", type=int, default=1, show_default=True, help="torch threads (1 leaves a training run room).")
def export(checkpoint: Path, cache_file: Path, output: Path, threads: int) -> None:
    """Freeze a checkpoint into a half-precision weights file with code-usage tables from the training latents."""
    torch.set_num_threads(threads)
    state = torch.load(checkpoint, weights_only=False, map_location="cpu")
    config = LatentModelConfig.from_json(state["config"])
    model = LatentControlGIC(config)
    model.load_state_dict(state["model"])
    model.eval()
    usage = count_group_usage(model, LatentCache.load(cache_file))
    metadata = {
        "training_steps": str(state["step"]),
        "training_stage": state["stage"],
        "backbone": "TAEF2 (madebyollin/taesd, MIT licence, Copyright (c) 2023 Ollin Boer Bohan)",
    }
    model_id = save_weights(output, model, usage, metadata)
    click.echo(f"{output}: model {model_id.hex()}, step {state['step']}")


if __name__ == "__main__":
    main()
