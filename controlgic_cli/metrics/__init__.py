"""Image-quality metrics: PSNR, MS-SSIM, LPIPS, DISTS and NIQE.

The learned metrics load their tensors from a metric-weights folder (see
``resolve_metric_weights_dir``); nothing is downloaded and no machine path
is built in.
"""

from .distortion import MS_SSIM_WEIGHTS, ms_ssim, ms_ssim_scales, psnr
from .dists import DISTS, DISTS_WEIGHTS_FILENAME
from .lpips import LPIPS, LPIPS_WEIGHTS_FILENAME
from .niqe import NIQE, NIQE_WEIGHTS_FILENAME, matlab_rgb2gray
from .suite import METRIC_NAMES, MetricReport, MetricSuite, compute_metrics
from .weights import (
    METRIC_WEIGHTS_ENV,
    MissingMetricWeights,
    resolve_metric_weights_dir,
)

__all__ = [
    "DISTS",
    "DISTS_WEIGHTS_FILENAME",
    "LPIPS",
    "LPIPS_WEIGHTS_FILENAME",
    "METRIC_NAMES",
    "METRIC_WEIGHTS_ENV",
    "MS_SSIM_WEIGHTS",
    "NIQE",
    "NIQE_WEIGHTS_FILENAME",
    "MetricReport",
    "MetricSuite",
    "MissingMetricWeights",
    "compute_metrics",
    "matlab_rgb2gray",
    "ms_ssim",
    "ms_ssim_scales",
    "psnr",
    "resolve_metric_weights_dir",
]
