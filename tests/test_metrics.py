"""controlgic_cli.metrics against the reference values in shared/metric-weights/README.md.

The weights folder is ``$CGIC_METRIC_WEIGHTS`` or ``<repo>/../shared/metric-weights``,
the Kodak images ``<repo>/../shared/data/kodak``; tests that need a missing
one are skipped, and the skip names the missing file (conftest.needs_shared).
Expensive results (DISTS on 512x768 images) are computed once per module.
"""

from __future__ import annotations

import hashlib
import io
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from controlgic_cli.errors import CgicError
from controlgic_cli.metrics import (
    DISTS,
    DISTS_WEIGHTS_FILENAME,
    LPIPS,
    LPIPS_WEIGHTS_FILENAME,
    METRIC_WEIGHTS_ENV,
    NIQE,
    NIQE_WEIGHTS_FILENAME,
    MetricSuite,
    MissingMetricWeights,
    compute_metrics,
    matlab_rgb2gray,
    ms_ssim,
    ms_ssim_scales,
    psnr,
    resolve_metric_weights_dir,
)

from .conftest import needs_shared

# README §4.2: LPIPS total, LPIPS relu1..relu5, DISTS.
SYNTH_REFERENCE = {
    "noise": (
        0.0257221,
        (0.000987574, 0.00898228, 0.00725339, 0.00490519, 0.00359371),
        0.214751,
    ),
    "shift": (
        0.144893,
        (0.0399493, 0.0190374, 0.0310167, 0.0320874, 0.0228028),
        0.144403,
    ),
}
KODAK_REFERENCE = {
    ("kodim01", 10): (
        0.243837,
        (0.00929987, 0.0551225, 0.0617301, 0.0652876, 0.0523966),
        0.263980,
    ),
    ("kodim01", 50): (
        0.0506792,
        (0.00308264, 0.00837998, 0.0133807, 0.0144472, 0.0113886),
        0.0970970,
    ),
    ("kodim23", 10): (
        0.349571,
        (0.0123422, 0.0489573, 0.102991, 0.0932664, 0.0920134),
        0.279155,
    ),
    ("kodim23", 50): (
        0.0901147,
        (0.00186192, 0.0220087, 0.0270755, 0.0204855, 0.0186832),
        0.0845522,
    ),
}
# README §4.3, pipeline A. None: the original image, not a JPEG.
NIQE_REFERENCE = {
    ("kodim01", None): 3.44879,
    ("kodim01", 10): 7.38534,
    ("kodim01", 50): 3.97948,
    ("kodim23", None): 4.25039,
    ("kodim23", 10): 8.96178,
    ("kodim23", 50): 4.09241,
}
NIQE_SYNTH_REFERENCE = 62.9727
# The README expects ~3 significant digits on natural images but only 2-4 %
# where JPEG q10 leaves exactly flat areas (the rounding of the Gaussian
# filter there decides the score).
NIQE_RTOL = 1e-3
NIQE_RTOL_FLAT = 0.04

SYNTH_SHA256 = {
    "ref": "e49a334c0411000c40808455723cd90f4acb115c2af37a0f9990f53c9cd4ec2a",
    "noise": "317629c36114c67ef99713fad41fee9d198d4de6c9baea96dc919c8e38ef4f14",
    "shift": "19da12aabe2b9ccbcd0dcfaf5b91c2629c05413f5c99cc709d9417e80478539b",
    "niqe": "9afb7ee0b388626881bcfe5900a63ff2dd160b226060f2d7addb4cc4f7329bb1",
}
KODAK_PIXEL_SHA256 = {
    "kodim01": "a00210743353594464ac67e680a41710f484444ca5f9dfddeb570de25c428273",
    "kodim23": "81992a83592267e69125666f3e3e04c1819529b4c4c1e55fde0a6a741bac4219",
}
JPEG_PIXEL_SHA256 = {
    ("kodim01", 10): "d919d2cecb4201e064cd76c678fc3509eb7043d26c1c74c5fd731b3cae4bd343",
    ("kodim01", 50): "ed44bf6037ef542b2d418332098adb2afbf7971a1781af6b2cf0c0dc4b21f9ad",
    ("kodim23", 10): "46875bd62f3315b2a5826e7e839b700474ff1842067f1d211e18db05a4689774",
    ("kodim23", 50): "118be6301a23f4ae864b68b1c6e5d81abfb942b7b05930999c89c3cc3adbba63",
}


def assert_matches_printed(value: float, reference: float) -> None:
    """``value`` agrees with a reference printed to 6 significant digits.

    Allows the printed rounding (half a unit of the 6th digit) plus one unit,
    which is the float32-vs-float64 spread the README reports.
    """
    if reference == 0:
        assert abs(value) < 1e-6
        return
    unit = 10.0 ** (math.floor(math.log10(abs(reference))) - 5)
    assert abs(value - reference) <= 1.5 * unit, f"{value!r} vs reference {reference}"


def pixel_sha256(image: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest()


def synthetic_images() -> dict[str, np.ndarray]:
    """The README §4.1(a) images, in integer arithmetic as specified."""
    y, x = np.mgrid[0:64, 0:64].astype(np.int64)
    checker = np.where((x // 8 + y // 8) % 2 == 0, 192, 64)
    ref = np.stack([4 * x, 4 * y, checker], axis=-1)
    channel = np.arange(3, dtype=np.int64)[None, None, :]
    offset = ((x[..., None] * 73856093) ^ (y[..., None] * 19349663) ^ (channel * 83492791)) % 61 - 30
    noise = np.clip(ref + offset, 0, 255)
    shift = np.roll(ref, 3, axis=1)

    y, x = np.mgrid[0:288, 0:384].astype(np.int64)
    hashed = ((x * 73856093) ^ (y * 19349663)) % 61
    ramp = np.abs(((x + 2 * y) % 64) - 32) * 3
    v = 40 + ramp + hashed
    niqe = np.stack([v, v + 20, 255 - v], axis=-1)
    return {
        name: image.astype(np.uint8)
        for name, image in (("ref", ref), ("noise", noise), ("shift", shift), ("niqe", niqe))
    }


def jpeg_roundtrip(image: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    return np.asarray(Image.open(buffer).convert("RGB"))


def lpips_input(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image.transpose(2, 0, 1).copy()).float()[None] / 127.5 - 1


def dists_input(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image.transpose(2, 0, 1).copy()).float()[None] / 255


def metric_weights(filename: str, what: str) -> Path:
    """The metric weights folder holding `filename`, else skip naming it."""
    return needs_shared("metric-weights", what, file=filename, env=METRIC_WEIGHTS_ENV)


@pytest.fixture(scope="module")
def weights_dir() -> Path:
    return needs_shared("metric-weights", "the metric weights", env=METRIC_WEIGHTS_ENV)


@pytest.fixture(scope="module")
def lpips_model() -> LPIPS:
    return LPIPS.from_dir(metric_weights(LPIPS_WEIGHTS_FILENAME, "LPIPS weights"))


@pytest.fixture(scope="module")
def dists_model() -> DISTS:
    return DISTS.from_dir(metric_weights(DISTS_WEIGHTS_FILENAME, "DISTS weights"))


@pytest.fixture(scope="module")
def niqe_model() -> NIQE:
    return NIQE.from_dir(metric_weights(NIQE_WEIGHTS_FILENAME, "NIQE's pristine model"))


@pytest.fixture(scope="module")
def synth() -> dict[str, np.ndarray]:
    images = synthetic_images()
    for name, image in images.items():
        assert pixel_sha256(image) == SYNTH_SHA256[name], f"synthetic image {name} differs from README"
    return images


@pytest.fixture(scope="module")
def kodak() -> dict[tuple[str, int | None], np.ndarray]:
    """Originals under (name, None), JPEGs under (name, quality) where their pixels
    match the README's (other Pillow/libjpeg versions decode differently)."""
    images: dict[tuple[str, int | None], np.ndarray] = {}
    for name, expected in KODAK_PIXEL_SHA256.items():
        path = needs_shared("data/kodak", "a Kodak image the reference values were computed on", file=f"{name}.png")
        path = path / f"{name}.png"
        image = np.asarray(Image.open(path).convert("RGB"))
        if pixel_sha256(image) != expected:
            pytest.skip(f"{path} is not the image the README's values were computed on")
        images[(name, None)] = image
        for quality in (10, 50):
            decoded = jpeg_roundtrip(image, quality)
            if pixel_sha256(decoded) == JPEG_PIXEL_SHA256[(name, quality)]:
                images[(name, quality)] = decoded
    return images


def kodak_jpeg_pair(kodak: dict, name: str, quality: int) -> tuple[np.ndarray, np.ndarray]:
    if (name, quality) not in kodak:
        pytest.skip(
            f"{name} JPEG q{quality} decodes to different pixels with this Pillow/libjpeg; "
            "the README's row does not apply"
        )
    return kodak[(name, None)], kodak[(name, quality)]


@pytest.fixture(scope="module")
def kodak_dists(dists_model: DISTS, kodak: dict) -> dict[tuple[str, int], float]:
    # VGG16 at 512x768 is the slow part of this file: run it once per image,
    # reusing each original's features for both of its JPEGs.
    values = {}
    with torch.inference_mode():
        for name in KODAK_PIXEL_SHA256:
            reference_features = dists_model.features(dists_input(kodak[(name, None)]))
            for quality in (10, 50):
                if (name, quality) in kodak:
                    decoded_features = dists_model.features(dists_input(kodak[(name, quality)]))
                    distance = dists_model.distance_from_features(reference_features, decoded_features)
                    values[(name, quality)] = float(distance)
    return values


# ---- LPIPS -------------------------------------------------------------------------------


@pytest.mark.parametrize("distorted", ["noise", "shift"])
def test_lpips_synthetic_matches_reference(lpips_model, synth, distorted):
    total_reference, layer_reference, _ = SYNTH_REFERENCE[distorted]
    with torch.no_grad():
        total, per_layer = lpips_model(lpips_input(synth["ref"]), lpips_input(synth[distorted]), per_layer=True)
    assert total.shape == (1,) and per_layer.shape == (1, 5)
    assert_matches_printed(float(total), total_reference)
    for value, reference in zip(per_layer[0].tolist(), layer_reference, strict=True):
        assert_matches_printed(value, reference)
    assert float(total) == pytest.approx(float(per_layer.sum()), rel=1e-6)


@pytest.mark.parametrize(("name", "quality"), list(KODAK_REFERENCE))
def test_lpips_kodak_jpeg_matches_reference(lpips_model, kodak, name, quality):
    reference_image, decoded = kodak_jpeg_pair(kodak, name, quality)
    total_reference, layer_reference, _ = KODAK_REFERENCE[(name, quality)]
    with torch.no_grad():
        total, per_layer = lpips_model(lpips_input(reference_image), lpips_input(decoded), per_layer=True)
    assert_matches_printed(float(total), total_reference)
    for value, reference in zip(per_layer[0].tolist(), layer_reference, strict=True):
        assert_matches_printed(value, reference)


def test_lpips_identical_images_give_zero(lpips_model, synth):
    with torch.no_grad():
        total, per_layer = lpips_model(lpips_input(synth["ref"]), lpips_input(synth["ref"]), per_layer=True)
    assert float(total) == 0.0
    assert per_layer.abs().max().item() == 0.0


def test_lpips_batches_independently(lpips_model, synth):
    reference = lpips_input(synth["ref"]).repeat(2, 1, 1, 1)
    distorted = torch.cat([lpips_input(synth["noise"]), lpips_input(synth["shift"])])
    with torch.no_grad():
        totals = lpips_model(reference, distorted)
    assert totals.shape == (2,)
    assert_matches_printed(float(totals[0]), SYNTH_REFERENCE["noise"][0])
    assert_matches_printed(float(totals[1]), SYNTH_REFERENCE["shift"][0])


def test_lpips_gradient_is_finite_and_matches_finite_differences(lpips_model, synth):
    # float64 inputs run the whole network in float64, so that finite
    # differences are accurate enough to check the analytic gradient.
    x = lpips_input(synth["noise"]).double().requires_grad_(True)
    y = lpips_input(synth["ref"]).double().requires_grad_(True)
    loss = lpips_model(x, y).sum()
    loss.backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(y.grad).all()
    assert x.grad.abs().max() > 0 and y.grad.abs().max() > 0

    generator = torch.Generator().manual_seed(0)
    direction = torch.randn(x.shape, generator=generator, dtype=torch.float64)
    # Small enough not to cross ReLU / max-pool kinks (1e-4 does, by 0.1-2 %).
    step = 1e-6
    with torch.no_grad():
        upper = lpips_model(x + step * direction, y).sum()
        lower = lpips_model(x - step * direction, y).sum()
    numerical = float((upper - lower) / (2 * step))
    analytical = float((x.grad * direction).sum())
    assert analytical == pytest.approx(numerical, rel=1e-6)


def test_lpips_is_frozen(lpips_model):
    assert not lpips_model.training
    lpips_model.train()
    assert not lpips_model.training
    assert all(not p.requires_grad for p in lpips_model.parameters())
    assert all(not b.requires_grad for b in lpips_model.buffers())
    # Frozen weights must not end up in a parent model's checkpoint.
    assert lpips_model.state_dict() == {}


def test_lpips_rejects_images_too_small(lpips_model):
    with pytest.raises(ValueError, match="at least"):
        lpips_model(torch.zeros(1, 3, 16, 16), torch.zeros(1, 3, 16, 16))


# ---- DISTS -------------------------------------------------------------------------------


@pytest.mark.parametrize("distorted", ["noise", "shift"])
def test_dists_synthetic_matches_reference(dists_model, synth, distorted):
    with torch.no_grad():
        value = dists_model(dists_input(synth["ref"]), dists_input(synth[distorted]))
    assert value.shape == (1,)
    assert_matches_printed(float(value), SYNTH_REFERENCE[distorted][2])


@pytest.mark.slow
@pytest.mark.parametrize(("name", "quality"), list(KODAK_REFERENCE))
def test_dists_kodak_jpeg_matches_reference(kodak, kodak_dists, name, quality):
    kodak_jpeg_pair(kodak, name, quality)
    assert_matches_printed(kodak_dists[(name, quality)], KODAK_REFERENCE[(name, quality)][2])


def test_dists_identical_images_give_zero(dists_model, synth):
    with torch.no_grad():
        value = dists_model(dists_input(synth["ref"]), dists_input(synth["ref"]))
    assert abs(float(value)) < 1e-6


# ---- NIQE --------------------------------------------------------------------------------


def test_niqe_synthetic_matches_reference(niqe_model, synth):
    assert niqe_model(synth["niqe"]) == pytest.approx(NIQE_SYNTH_REFERENCE, rel=NIQE_RTOL)


@pytest.mark.parametrize(("name", "quality"), list(NIQE_REFERENCE))
def test_niqe_kodak_matches_reference(niqe_model, kodak, name, quality):
    image = kodak[(name, None)] if quality is None else kodak_jpeg_pair(kodak, name, quality)[1]
    tolerance = NIQE_RTOL_FLAT if quality == 10 else NIQE_RTOL
    assert niqe_model(image) == pytest.approx(NIQE_REFERENCE[(name, quality)], rel=tolerance)


def test_matlab_rgb2gray_uses_matlab_coefficients():
    pixels = np.array([[[255, 255, 255], [0, 0, 0], [177, 10, 208], [41, 48, 176]]], dtype=np.uint8)
    # 82.498 and 60.502 with MATLAB's coefficients; the rounded 0.299/0.587/0.114
    # would give 83 and 60.
    assert matlab_rgb2gray(pixels).tolist() == [[255.0, 0.0, 82.0, 61.0]]


def test_niqe_rejects_images_smaller_than_a_block(niqe_model):
    with pytest.raises(ValueError, match="96x96"):
        niqe_model(np.zeros((64, 200, 3), dtype=np.uint8))


# ---- PSNR / MS-SSIM ----------------------------------------------------------------------


def test_psnr_known_values(synth):
    assert psnr(synth["ref"], synth["ref"]) == math.inf
    zeros = np.zeros((8, 8, 3), dtype=np.uint8)
    ones = np.ones((8, 8, 3), dtype=np.uint8)
    assert psnr(zeros, ones) == pytest.approx(10 * math.log10(255**2))
    mixed = ones.copy()
    mixed[..., 0] = 4  # squared errors 16, 1, 1 -> mean 6
    assert psnr(zeros, mixed) == pytest.approx(10 * math.log10(255**2 / 6))


def test_psnr_rejects_mismatched_images(synth):
    with pytest.raises(ValueError):
        psnr(synth["ref"], synth["niqe"])
    with pytest.raises(ValueError):
        psnr(synth["ref"].astype(np.float32), synth["ref"])


def test_ms_ssim_identity_and_ordering(kodak):
    original = kodak[("kodim01", None)]
    assert ms_ssim(original, original) == pytest.approx(1.0, abs=1e-12)
    low = ms_ssim(original, jpeg_roundtrip(original, 10))
    high = ms_ssim(original, jpeg_roundtrip(original, 50))
    assert 0 < low < high < 1


def test_ms_ssim_scale_fallback(synth):
    assert ms_ssim_scales(512, 768) == 5
    assert ms_ssim_scales(161, 1000) == 5
    assert ms_ssim_scales(160, 1000) == 4
    assert ms_ssim_scales(64, 64) == 3
    assert ms_ssim_scales(11, 11) == 1
    assert ms_ssim_scales(10, 100) == 0
    value = ms_ssim(synth["ref"], synth["noise"])
    assert 0 < value < 1
    with pytest.raises(ValueError, match="11"):
        ms_ssim(synth["ref"][:10], synth["noise"][:10])


# ---- weights resolution and the all-metrics helper ---------------------------------------


def test_resolve_metric_weights_dir(monkeypatch, tmp_path):
    monkeypatch.delenv(METRIC_WEIGHTS_ENV, raising=False)
    assert resolve_metric_weights_dir(None) is None
    monkeypatch.setenv(METRIC_WEIGHTS_ENV, str(tmp_path / "from-env"))
    assert resolve_metric_weights_dir(None) == tmp_path / "from-env"
    assert resolve_metric_weights_dir(str(tmp_path)) == tmp_path


def test_missing_weights_raise_a_named_error(monkeypatch, tmp_path):
    with pytest.raises(MissingMetricWeights, match=LPIPS_WEIGHTS_FILENAME) as raised:
        LPIPS.from_dir(tmp_path)
    assert isinstance(raised.value, CgicError)
    assert raised.value.path == tmp_path / LPIPS_WEIGHTS_FILENAME
    monkeypatch.delenv(METRIC_WEIGHTS_ENV, raising=False)
    with pytest.raises(MissingMetricWeights, match=METRIC_WEIGHTS_ENV):
        NIQE.from_dir(None)


def test_compute_metrics_skips_missing_weights_with_reasons(synth, tmp_path):
    report = compute_metrics(synth["ref"], synth["noise"], weights_dir=tmp_path)
    assert set(report.values) == {"psnr", "ms_ssim"}
    assert set(report.skipped) == {"lpips", "dists", "niqe"}
    assert LPIPS_WEIGHTS_FILENAME in report.skipped["lpips"]
    assert "96" in report.skipped["niqe"]  # too small before weights even matter
    assert "ms_ssim" in report.notes  # 64x64 gets 3 scales


def test_compute_metrics_with_weights(synth, weights_dir, lpips_model):
    report = compute_metrics(synth["ref"], synth["noise"], weights_dir=weights_dir, metrics=("psnr", "lpips", "niqe"))
    assert set(report.values) == {"psnr", "lpips"}
    assert_matches_printed(report.values["lpips"], SYNTH_REFERENCE["noise"][0])
    assert "niqe" in report.skipped


def test_suite_reuses_dists_reference_features_without_changing_values(weights_dir, dists_model):
    rng = np.random.default_rng(7)
    reference = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    suite = MetricSuite(weights_dir)
    for quality in (10, 60):
        decoded = jpeg_roundtrip(reference, quality)
        value = suite.compute(reference, decoded, metrics=("dists",)).values["dists"]
        with torch.inference_mode():
            direct = float(dists_model(dists_input(reference), dists_input(decoded)).item())
        assert value == direct
    other = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)  # a new reference replaces the cached one
    assert suite.compute(other, other, metrics=("dists",)).values["dists"] == pytest.approx(0.0, abs=1e-6)
