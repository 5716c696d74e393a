"""All available metrics for one (reference, decoded) pair of 8-bit RGB images.

Learned metrics whose weight file is missing, and metrics the image is too
small for, are reported as skipped with the reason; no value is ever made
up for them.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .distortion import MS_SSIM_WEIGHTS, ms_ssim, ms_ssim_scales, psnr
from .dists import DISTS
from .lpips import LPIPS, LPIPS_MIN_SIZE
from .niqe import NIQE, NIQE_BLOCK_SIZE
from .weights import MissingMetricWeights, resolve_metric_weights_dir

METRIC_NAMES = ("psnr", "ms_ssim", "lpips", "dists", "niqe")


@dataclass
class MetricReport:
    """``values``: metric -> value; ``skipped``: metric -> why there is no value.

    ``niqe`` is the no-reference score of the decoded (second) image.
    ``notes`` records caveats about values that were computed, such as an
    MS-SSIM on fewer than five scales.
    """

    values: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)


class MetricSuite:
    """Loads each learned metric once, on first use, and computes metrics for image pairs.

    ``weights_dir``: the metric-weights folder; ``None`` falls back to
    ``$CGIC_METRIC_WEIGHTS`` and, if that is unset, the learned metrics are
    skipped.
    """

    def __init__(self, weights_dir: str | Path | None = None, device: str | torch.device = "cpu"):
        self.weights_dir = resolve_metric_weights_dir(weights_dir)
        self.device = torch.device(device)
        self._models: dict[str, LPIPS | DISTS | NIQE] = {}
        self._load_errors: dict[str, str] = {}
        # DISTS runs VGG16 at full resolution, seconds per image on a CPU; an
        # evaluation scores many decodes against one reference, so the
        # reference's features are kept for the next call.
        self._dists_reference: tuple[bytes, list[torch.Tensor]] | None = None

    def _model(self, name: str) -> LPIPS | DISTS | NIQE | None:
        """The loaded model, or None with the reason stored in ``_load_errors``."""
        if name in self._models:
            return self._models[name]
        if name in self._load_errors:
            return None
        loader = {"lpips": LPIPS.from_dir, "dists": DISTS.from_dir, "niqe": NIQE.from_dir}[name]
        try:
            model = loader(self.weights_dir)
        except MissingMetricWeights as error:
            self._load_errors[name] = str(error)
            return None
        if isinstance(model, torch.nn.Module):
            model = model.to(self.device)
        self._models[name] = model
        return model

    def compute(
        self,
        reference_u8: np.ndarray,
        decoded_u8: np.ndarray,
        metrics: tuple[str, ...] | list[str] = METRIC_NAMES,
    ) -> MetricReport:
        unknown = sorted(set(metrics) - set(METRIC_NAMES))
        if unknown:
            raise ValueError(f"unknown metrics {unknown}; known: {', '.join(METRIC_NAMES)}")
        if reference_u8.shape != decoded_u8.shape:
            raise ValueError(f"images differ in size: {reference_u8.shape} vs {decoded_u8.shape}")
        height, width = reference_u8.shape[:2]
        smaller_side = min(height, width)
        report = MetricReport()

        if "psnr" in metrics:
            report.values["psnr"] = psnr(reference_u8, decoded_u8)
        if "ms_ssim" in metrics:
            scales = ms_ssim_scales(height, width)
            if scales == 0:
                report.skipped["ms_ssim"] = f"image {width}x{height} is smaller than the 11x11 SSIM window"
            else:
                report.values["ms_ssim"] = ms_ssim(reference_u8, decoded_u8)
                if scales < len(MS_SSIM_WEIGHTS):
                    report.notes["ms_ssim"] = f"computed on {scales} scales instead of 5 (image too small)"

        # DISTS has no minimum: its L2 pools keep at least a 1x1 map.
        size_limits = {"lpips": LPIPS_MIN_SIZE, "dists": 1, "niqe": NIQE_BLOCK_SIZE}
        for name in ("lpips", "dists", "niqe"):
            if name not in metrics:
                continue
            if smaller_side < size_limits[name]:
                report.skipped[name] = (
                    f"image {width}x{height} is smaller than the {size_limits[name]} px {name.upper()} needs"
                )
                continue
            model = self._model(name)
            if model is None:
                report.skipped[name] = self._load_errors[name]
                continue
            if name == "niqe":
                value = model(decoded_u8)
                if math.isnan(value):
                    report.skipped[name] = "too few complete 96x96 blocks to fit NIQE's covariance"
                    continue
                report.values[name] = value
                continue
            reference = _to_float_tensor(reference_u8, self.device)
            decoded = _to_float_tensor(decoded_u8, self.device)
            with torch.inference_mode():
                if name == "lpips":
                    # Official lpips.im2tensor scaling.
                    value = model(reference / 127.5 - 1, decoded / 127.5 - 1)
                else:
                    value = model.distance_from_features(
                        self._dists_reference_features(model, reference_u8, reference), model.features(decoded / 255)
                    )
            report.values[name] = float(value.item())
        return report

    def _dists_reference_features(self, model: DISTS, reference_u8: np.ndarray, reference: torch.Tensor):
        key = hashlib.blake2b(reference_u8.tobytes(), digest_size=16).digest() + str(reference_u8.shape).encode()
        if self._dists_reference is None or self._dists_reference[0] != key:
            self._dists_reference = (key, model.features(reference / 255))
        return self._dists_reference[1]


def compute_metrics(
    reference_u8: np.ndarray,
    decoded_u8: np.ndarray,
    weights_dir: str | Path | None = None,
    metrics: tuple[str, ...] | list[str] = METRIC_NAMES,
    device: str | torch.device = "cpu",
) -> MetricReport:
    """One-off convenience around :class:`MetricSuite` (reloads the weights each call;
    keep a MetricSuite to score many images)."""
    return MetricSuite(weights_dir, device).compute(reference_u8, decoded_u8, metrics)


def _to_float_tensor(image_u8: np.ndarray, device: torch.device) -> torch.Tensor:
    """(1, 3, H, W) float32 with the uint8 values 0..255."""
    if image_u8.dtype != np.uint8 or image_u8.ndim != 3 or image_u8.shape[2] != 3:
        raise ValueError(f"expected a uint8 (H, W, 3) image, got {image_u8.dtype} {image_u8.shape}")
    chw = torch.from_numpy(np.ascontiguousarray(image_u8.transpose(2, 0, 1)))
    return chw.to(device=device, dtype=torch.float32)[None]
