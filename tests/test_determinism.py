"""The same decoded pixels whatever the torch thread count; the library leaves global state alone."""

from __future__ import annotations

import subprocess
import sys
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from controlgic_cli.api import Codec
from controlgic_cli.determinism import _tf32_settings, invariant_convolutions, without_tf32

from .conftest import synthetic_photo

SAMPLE = Path(__file__).resolve().parents[1] / "docs" / "sample.png"
# Small shapes, where torch sends some convolutions to MKL's GEMM, which splits its sums between threads.
SHAPES = ((32, 48), (48, 48), (16, 80), (80, 32), (64, 64), (48, 96))


@pytest.fixture
def threads():
    """Set torch's thread count inside a test; the count it had comes back after."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


def _decode_recording(codec: Codec, data: bytes, monkeypatch) -> tuple[np.ndarray, list[torch.Tensor]]:
    """decode_array of the file, and the decoder's float output of each tile, before the rounding to 8 bits."""
    outputs = []
    network = codec.network.network
    original = type(network).decode_indices

    def recording(self, *args):
        outputs.append(original(self, *args))
        return outputs[-1]

    monkeypatch.setattr(type(network), "decode_indices", recording)
    try:
        return codec.decode_array(data)[0], outputs
    finally:
        monkeypatch.undo()


def _assert_thread_count_changes_nothing(codec: Codec, images: list[np.ndarray], threads, monkeypatch) -> None:
    files = [codec.encode(image).data for image in images]
    results = {}
    for count in (1, 2, 3):
        threads(count)
        results[count] = [_decode_recording(codec, data, monkeypatch) for data in files]
    for count in (2, 3):
        for (rgb, floats), (rgb_1, floats_1) in zip(results[count], results[1], strict=True):
            np.testing.assert_array_equal(rgb, rgb_1)
            # The floats themselves: a pixel flips only where one sits on a rounding boundary, the floats
            # differ (by ~1e-6) on every small image where the sums are split differently.
            assert all(torch.equal(a, b) for a, b in zip(floats, floats_1, strict=True))


def test_decoding_on_1_2_and_3_threads_gives_the_same_pixels_tiny_model(tiny_weights, threads, monkeypatch):
    codec = Codec(tiny_weights, device="cpu")
    images = [synthetic_photo(height, width, seed=i) for i, (height, width) in enumerate(SHAPES)]
    _assert_thread_count_changes_nothing(codec, images, threads, monkeypatch)


def _sample_crops() -> list[np.ndarray]:
    """Small crops of docs/sample.png (a photo) at the shapes where thread counts used to flip pixels."""
    photo = np.asarray(Image.open(SAMPLE).convert("RGB"))
    rng = np.random.default_rng(0)
    crops = []
    for height, width in SHAPES:
        top, left = rng.integers(0, photo.shape[0] - height), rng.integers(0, photo.shape[1] - width)
        crops.append(photo[top : top + height, left : left + width])
    return crops


def test_decoding_on_1_2_and_3_threads_gives_the_same_pixels_shipped_model(shipped_weights, threads, monkeypatch):
    codec = Codec(shipped_weights, device="cpu")
    _assert_thread_count_changes_nothing(codec, _sample_crops(), threads, monkeypatch)


def test_decoding_on_two_worker_threads_gives_what_one_thread_gives_shipped_model(shipped_weights, threads):
    """What `cgic decode -j 2` does: two Python threads decoding at once, one torch thread each."""
    codec = Codec(shipped_weights, device="cpu")
    files = [codec.encode(crop).data for crop in _sample_crops()]
    threads(2)
    serial = [codec.decode_array(data)[0] for data in files]
    threads(1)
    with ThreadPoolExecutor(max_workers=2) as pool:
        parallel = list(pool.map(lambda data: codec.decode_array(data)[0], files))
    for a, b in zip(parallel, serial, strict=True):
        np.testing.assert_array_equal(a, b)


def test_the_shipped_decoder_gives_the_same_floats_for_any_thread_count(shipped_weights, threads):
    """The decoder alone on random latents: bit-identical output on 1, 2, 3 and 4 threads."""
    network = Codec(shipped_weights, device="cpu").network.network
    generator = torch.Generator().manual_seed(0)
    for height, width in ((32, 48), (16, 80), (96, 64)):
        z_hat = torch.randn(1, network.config.latent_dim, height // 4, width // 4, generator=generator)
        masks = [(torch.rand(1, 1, height // s, width // s, generator=generator) < 0.5).float() for s in (4, 8, 16)]
        outputs = []
        for count in (1, 2, 3, 4):
            threads(count)
            with torch.no_grad(), invariant_convolutions():
                outputs.append(network.decoder(z_hat.contiguous(memory_format=torch.channels_last), *masks))
        assert all(torch.equal(output, outputs[0]) for output in outputs[1:])


def test_invariant_convolutions_computes_what_conv2d_computes_and_ends_with_the_block():
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(1, 16, 9, 7, generator=generator).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(24, 16, 3, 3, generator=generator)
    bias = torch.randn(24, generator=generator)
    cases = [
        ((x, weight, bias), {"padding": 1}),
        ((x, weight), {"stride": 2}),
        ((x, weight[:, :8], None, 1, (1, 1), 1, 2), {}),
        ((x, weight[:, :, :1, :1], bias), {}),
        ((x, weight, bias), {"padding": "same"}),  # not for oneDNN as given: torch's own path
    ]
    for args, kwargs in cases:
        with invariant_convolutions():
            ours = F.conv2d(*args, **kwargs)
        torch.testing.assert_close(ours, F.conv2d(*args, **kwargs), rtol=1e-5, atol=1e-5)
    # Gradients still flow where asked for (torch's own path).
    leaf = x.clone().requires_grad_(True)
    with invariant_convolutions():
        F.conv2d(leaf, weight, bias).sum().backward()
    assert leaf.grad is not None


def test_invariant_convolutions_is_this_threads_only():
    seen = {}
    x, weight = torch.randn(1, 4, 5, 5), torch.randn(4, 4, 3, 3)

    def other_thread():
        seen["modes"] = torch.overrides._get_current_function_mode_stack()
        F.conv2d(x, weight)

    with invariant_convolutions():
        assert len(torch.overrides._get_current_function_mode_stack()) == 1
        worker = threading.Thread(target=other_thread)
        worker.start()
        worker.join()
    assert seen["modes"] == []
    assert torch.overrides._get_current_function_mode_stack() == []


# ----- global state ----------------------------------------------------------------------------


def _torch_flags() -> dict:
    return {
        "tf32": _tf32_settings(),
        "cudnn": (torch.backends.cudnn.enabled, torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic),
        "mkldnn": torch.backends.mkldnn.enabled,
        "matmul_precision": torch.get_float32_matmul_precision(),
        "threads": torch.get_num_threads(),
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "grad": torch.is_grad_enabled(),
    }


def test_constructing_and_using_a_codec_leaves_torch_flags_unchanged(tiny_weights):
    before = _torch_flags()
    codec = Codec(tiny_weights, device="cpu")
    assert _torch_flags() == before
    codec.decode_array(codec.encode(synthetic_photo(32, 48)).data)
    assert _torch_flags() == before


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_cuda_codec_leaves_tf32_as_the_caller_set_it(tiny_weights):
    before = _tf32_settings()
    codec = Codec(tiny_weights, device="cuda")
    assert _tf32_settings() == before
    codec.decode_array(codec.encode(synthetic_photo(32, 48)).data)
    assert _tf32_settings() == before


def test_without_tf32_turns_tf32_off_on_cuda_only_and_puts_it_back():
    before = _tf32_settings()
    with without_tf32(torch.device("cpu")):
        assert _tf32_settings() == before
    with without_tf32(torch.device("cuda")):
        inside = _tf32_settings()
        assert inside[1:] in (("ieee", "ieee"), (False, False))
        with without_tf32(torch.device("cuda")):
            assert _tf32_settings() == inside
        assert _tf32_settings() == inside
    assert _tf32_settings() == before


def test_without_tf32_overlapping_on_threads_restores_once_the_last_ends():
    before = _tf32_settings()
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    inside = {}

    def first():
        with without_tf32(torch.device("cuda")):
            first_in.set()
            second_in.wait(5)
        first_out.set()

    def second():
        first_in.wait(5)
        with without_tf32(torch.device("cuda")):
            second_in.set()
            first_out.wait(5)
            inside["after the first ended"] = _tf32_settings()

    workers = [threading.Thread(target=first), threading.Thread(target=second)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert inside["after the first ended"] != before
    assert _tf32_settings() == before


def test_importing_and_constructing_leaves_warnings_and_torch_alone(tiny_weights):
    script = f"""
import warnings, torch
shown, flags = warnings.showwarning, (torch.backends.cudnn.allow_tf32, torch.get_num_threads())
import controlgic_cli, controlgic_cli.api, controlgic_cli.cli, controlgic_cli.cli.output, controlgic_cli.pillow_plugin
from controlgic_cli.api import Codec
from controlgic_cli.cli.output import Reporter
Codec({str(tiny_weights)!r}, device="cpu")
Reporter(False, True, False, stdout_is_data=False)
assert warnings.showwarning is shown, warnings.showwarning
assert (torch.backends.cudnn.allow_tf32, torch.get_num_threads()) == flags
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_a_cli_command_prints_python_warnings_while_it_runs_only(tmp_path, tiny_weights):
    from click.testing import CliRunner

    from controlgic_cli.cli import main

    from .test_cli import save_png

    src = save_png(tmp_path / "in.png", synthetic_photo(24, 24))
    shown = warnings.showwarning
    result = CliRunner().invoke(main, ["encode", str(src), "--weights", str(tiny_weights)])
    assert result.exit_code == 0, result.output
    assert warnings.showwarning is shown
