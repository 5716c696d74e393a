"""Decoded pixels that do not depend on the number of torch threads; CUDA without TF32.

On a CPU, torch picks a convolution backend per call: for a batch of one
image, 3x3 convolutions whose input holds at most 20480 values (and 1x1
convolutions on one thread) go to im2col plus an MKL matrix product, the
rest to oneDNN. MKL splits the sum over input channels between threads when
the output is small, so the summation order, and the last bits of the
result, depend on torch.set_num_threads: a small image (say 32x48) decoded
on 1 and on 2 threads differs by ~1e-5 in the decoder's first layers, and
the final rounding to 8 bits turns a value on a rounding boundary into a +-1
flip. oneDNN's direct convolutions give the same bits for any thread count
(checked for 1, 2, 3, 4 and 8 threads on the decoder's layer shapes, with
AVX-512 and with oneDNN held to AVX2).

invariant_convolutions() sends every float32 CPU conv2d to oneDNN for the
duration of a `with` block, which is what torch already does for the large
ones. It is a torch function mode: it applies to the calling thread only and
changes no global flag, so other threads and library users are unaffected.
Results still depend on the CPU's instruction set (AVX2 and AVX-512 kernels
sum in different orders).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import torch
from torch.overrides import TorchFunctionMode


def _conv_arguments(args: tuple, kwargs: dict) -> tuple | None:
    """torch.conv2d's arguments as (input, weight, bias, padding, stride, dilation, groups), or None when
    oneDNN cannot take them as given (string padding, non-float32 or non-CPU tensors, gradients)."""
    names = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
    defaults = {"bias": None, "stride": 1, "padding": 0, "dilation": 1, "groups": 1}
    values = dict(defaults, **dict(zip(names, args, strict=False)), **kwargs)
    if set(values) != set(names):
        return None
    x, weight, bias = values["input"], values["weight"], values["bias"]
    tensors = [t for t in (x, weight, bias) if t is not None]
    if not all(isinstance(t, torch.Tensor) for t in tensors) or isinstance(values["padding"], str):
        return None
    if any(t.device.type != "cpu" or t.dtype != torch.float32 or t.is_mkldnn or t.is_sparse for t in tensors):
        return None
    if x.dim() != 4 or weight.dim() != 4 or (torch.is_grad_enabled() and any(t.requires_grad for t in tensors)):
        return None

    def pair(value) -> list[int]:
        return [int(value)] * 2 if isinstance(value, int) else [int(v) for v in value]

    padding, stride, dilation = (pair(values[name]) for name in ("padding", "stride", "dilation"))
    return x, weight, bias, padding, stride, dilation, values["groups"]


class _OneDnnConvolutions(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.conv2d:
            arguments = _conv_arguments(args, kwargs)
            if arguments is not None:
                return torch.ops.aten.mkldnn_convolution(*arguments)
        return func(*args, **kwargs)


@contextlib.contextmanager
def invariant_convolutions() -> Iterator[None]:
    """Within the block, on this thread, CPU float32 conv2d gives the same bits whatever the torch thread count.

    A no-op where torch has no oneDNN or it is turned off (torch.backends.mkldnn.enabled = False): then
    results may depend on the thread count, as without it.
    """
    if not (torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled):
        yield
        return
    with _OneDnnConvolutions():
        yield


_tf32_lock = threading.Lock()
_tf32_users = 0
_tf32_saved: tuple | None = None
_FULL_PRECISION = {"precision": ("precision", "ieee", "ieee"), "allow": ("allow", False, False)}


def _tf32_settings() -> tuple:
    """The TF32 settings of cuBLAS matmuls and cuDNN convolutions, in the API this torch has."""
    if hasattr(torch.backends.cudnn, "conv") and hasattr(torch.backends.cuda.matmul, "fp32_precision"):
        return ("precision", torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision)
    return ("allow", torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)


def _set_tf32_settings(settings: tuple) -> None:
    api, matmul, conv = settings
    if api == "precision":
        torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision = matmul, conv
    else:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, conv


@contextlib.contextmanager
def without_tf32(device: torch.device) -> Iterator[None]:
    """On CUDA, float32 matmuls and convolutions in full precision during the block, the caller's settings after.

    TF32 (cuDNN's default for convolutions on Ampere and later) would change the
    indices relative to a CPU encode. torch's flags are process-wide, so blocks
    overlapping on several threads are counted: the first saves the settings,
    the last to end puts them back; CUDA work of other threads in between runs
    without TF32 too. On a CPU nothing changes.
    """
    global _tf32_users, _tf32_saved
    if device.type != "cuda":
        yield
        return
    with _tf32_lock:
        if _tf32_users == 0:
            _tf32_saved = _tf32_settings()
            _set_tf32_settings(_FULL_PRECISION[_tf32_saved[0]])
        _tf32_users += 1
    try:
        yield
    finally:
        with _tf32_lock:
            _tf32_users -= 1
            if _tf32_users == 0:
                _set_tf32_settings(_tf32_saved)
                _tf32_saved = None
