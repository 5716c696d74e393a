"""Rate-distortion evaluation: cgic against JPEG, WebP and AVIF at equal bitrates.

For every image and target bitrate, each codec is run at the setting whose
real file size gives the bpp nearest the target (cgic through its own rate
control; the classic codecs by a search over Pillow's quality), the file is
decoded, and the metrics are computed on 8-bit RGB against the original.

Results are appended to OUT/rows.csv one row at a time, so an interrupted or
extended run (another codec, another target) only computes what is missing.
OUT/summary-<codec>.json follows CompressAI's results layout, and
OUT/rd-<metric>.png plots every codec (needs matplotlib: pip install "cgic[eval]").
"""

from __future__ import annotations

import csv
import io
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
from PIL import Image, features
from tqdm import tqdm

from ..api import Codec
from ..errors import CgicError
from ..io.image_io import list_image_files, load_image
from ..metrics.suite import MetricSuite
from .classic import CLASSIC_CODECS, classic_at_bpp, encode_classic, jxl_available
from .gallery import gallery_strip

# cgic at each --tune, under its own codec name.
CGIC_TUNES = {"cgic": "perceptual", "cgic-psnr": "psnr"}
ALL_CODECS = (*CGIC_TUNES, "jpeg", "webp", "avif", "jxl")
METRICS = ("psnr", "ms_ssim", "lpips", "dists", "niqe")
# CompressAI's key names for the metrics they share with us.
COMPRESSAI_KEYS = {"psnr": "psnr-rgb", "ms_ssim": "ms-ssim-rgb", "lpips": "lpips", "dists": "dists", "niqe": "niqe"}


@dataclass
class Row:
    image: str
    codec: str
    target_bpp: float
    bpp: float
    setting: str  # quality for classic codecs, ratios for cgic
    encode_s: float
    decode_s: float
    psnr: float | None = None
    ms_ssim: float | None = None
    lpips: float | None = None
    dists: float | None = None
    niqe: float | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        return self.image, self.codec, f"{self.target_bpp:g}"


def available_codecs() -> list[str]:
    checks = {"AVIF": lambda: bool(features.check("avif")), "JXL": jxl_available}
    return [*CGIC_TUNES] + [name for name, (fmt, _) in CLASSIC_CODECS.items() if checks.get(fmt, lambda: True)()]


def read_rows(path: Path) -> list[Row]:
    """The rows of an earlier run. A last row cut short (the run was killed while writing it) is dropped, and
    the file rewritten without it, so it is computed again; a file that is not a rows.csv is a CgicError."""
    if not path.exists():
        return []
    names = [field.name for field in fields(Row)]
    with path.open(newline="") as f:
        lines = list(csv.reader(f))
    if lines and lines[0] != names:
        raise CgicError(f"{path} is not the rows.csv of a cgic eval run (columns {lines[0][:4]}...)")
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        try:
            rows.append(_row_from(dict(zip(names, line, strict=True))))
        except ValueError:
            if number != len(lines):
                raise CgicError(f"{path}: line {number} is damaged; remove it to recompute it") from None
            with path.open("w", newline="") as f:
                csv.writer(f).writerows(lines[:-1])
    return rows


def _row_from(record: dict[str, str]) -> Row:
    values = {}
    for name, raw in record.items():
        if name in ("image", "codec", "setting"):
            values[name] = raw
        else:
            values[name] = float(raw) if raw not in ("", "None") else None
    if values["bpp"] is None or values["target_bpp"] is None:
        raise ValueError("a row without its bpp")
    return Row(**values)


def append_row(path: Path, row: Row) -> None:
    new = not path.exists()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[field.name for field in fields(Row)])
        if new:
            writer.writeheader()
        writer.writerow(asdict(row))


def evaluate_folder(
    folder: Path,
    out_dir: Path,
    codecs: list[str],
    targets: list[float],
    metric_weights: str | None = None,
    weights: str | None = None,
    limit: int = 0,
    progress: Callable[[str], None] = lambda message: None,
    gallery_images: int = 0,
    show_bar: bool = False,
    on_unreadable: Callable[[str], None] = lambda message: None,
) -> list[Row]:
    """Every row of the chosen codecs and targets, the earlier runs' included (see the module docstring).

    An image that cannot be read goes to on_unreadable(message) and the others are evaluated.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    rows_path = out_dir / "rows.csv"
    done = {row.key for row in read_rows(rows_path)}
    files = list_image_files(folder)
    if limit:
        files = files[:limit]
    suite = MetricSuite(metric_weights)
    codec = Codec(weights, device="cpu") if set(CGIC_TUNES) & set(codecs) else None
    # A bar on a terminal (tqdm's disable=None); the per-row lines go through it so they do not break it.
    bar = tqdm(total=len(files) * len(codecs) * len(targets), file=sys.stderr, disable=None if show_bar else True)
    say = progress
    if not bar.disable:

        def say(message: str) -> None:
            bar.write(message, file=sys.stderr)

    if not files:
        raise CgicError(f"{folder}: no images in it")
    for path in files:
        try:
            source = load_image(path)
        except CgicError as exc:  # one unreadable file must not sink the evaluation of the others
            on_unreadable(str(exc))
            bar.update(len(codecs) * len(targets))
            continue
        rgb = source.rgb
        pixels = rgb.shape[0] * rgb.shape[1]
        for name in codecs:
            analysis = None  # one network pass (and search, for cgic-psnr) serves every target
            for target in targets:
                bar.update()
                if (path.name, name, f"{target:g}") in done:
                    continue
                started = time.perf_counter()
                if name in CGIC_TUNES:
                    if analysis is None:
                        analysis = codec.analyse(source, CGIC_TUNES[name])
                        analysis_s = time.perf_counter() - started
                        started = time.perf_counter()
                    result = codec.encode_analysis_to_target(analysis, target_bpp=target)
                    data, setting = result.data, ",".join(f"{r:.4f}" for r in result.stats.ratios)
                    # What producing this one file costs: the shared pass plus its own writing.
                    encode_s = analysis_s + time.perf_counter() - started
                    started = time.perf_counter()
                    decoded = np.asarray(codec.decode(data).convert("RGB"))
                else:
                    data, quality = classic_at_bpp(rgb, name, target)
                    setting = f"q{quality}"
                    # Time one encode at the chosen quality, not the search.
                    t0 = time.perf_counter()
                    encode_classic(rgb, name, quality)
                    encode_s = time.perf_counter() - t0
                    started = time.perf_counter()
                    decoded = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
                decode_s = time.perf_counter() - started
                report = suite.compute(rgb, decoded)
                row = Row(path.name, name, target, 8 * len(data) / pixels, setting, encode_s, decode_s)
                for metric in METRICS:
                    setattr(row, metric, report.values.get(metric))
                append_row(rows_path, row)
                say(f"{path.name} {name} {target:g}: {row.bpp:.4f} bpp, psnr {row.psnr:.2f}, lpips {row.lpips}")
    bar.close()
    rows = [row for row in read_rows(rows_path) if row.codec in codecs and row.target_bpp in targets]
    write_summaries(out_dir, rows, targets)
    plot_curves(out_dir, rows, targets, progress)
    if gallery_images and "cgic" in codecs:
        classic = [name for name in codecs if name not in CGIC_TUNES]
        for path in files[:gallery_images]:
            for target in targets:
                out = out_dir / f"gallery-{path.stem}-{target:g}bpp.png"
                if not out.exists():
                    gallery_strip(path, codec, classic, target).save(out, optimize=True)
                    progress(f"gallery {out.name}")
    return rows


def write_summaries(out_dir: Path, rows: list[Row], targets: list[float]) -> None:
    for name in sorted({row.codec for row in rows}):
        results: dict[str, list[float]] = {"bpp": []}
        for target in targets:
            subset = [row for row in rows if row.codec == name and row.target_bpp == target]
            if not subset:
                continue
            results["bpp"].append(float(np.mean([row.bpp for row in subset])))
            for metric in METRICS:
                values = [getattr(row, metric) for row in subset if getattr(row, metric) is not None]
                if values:
                    results.setdefault(COMPRESSAI_KEYS[metric], []).append(float(np.mean(values)))
            results.setdefault("encoding_time", []).append(float(np.mean([row.encode_s for row in subset])))
            results.setdefault("decoding_time", []).append(float(np.mean([row.decode_s for row in subset])))
        if name not in CGIC_TUNES:
            description = f"Pillow {Image.__version__}"
        elif CGIC_TUNES[name] == "perceptual":
            description = "cgic rate control (--target-bpp)"
        else:
            description = f"cgic rate control (--target-bpp, --tune {CGIC_TUNES[name]})"
        summary = {"name": name, "description": description, "results": results}
        (out_dir / f"summary-{name}.json").write_text(json.dumps(summary, indent=1))


METRIC_LABELS = {
    "psnr": "PSNR-RGB (dB), higher is better",
    "ms_ssim": "MS-SSIM (RGB), higher is better",
    "lpips": "LPIPS (AlexNet), lower is better",
    "dists": "DISTS, lower is better",
    "niqe": "NIQE, lower is better",
}


def plot_curves(out_dir: Path, rows: list[Row], targets: list[float], progress: Callable[[str], None]) -> None:
    """rd-<metric>.png: every codec's mean curve, plus published Kodak results where the metric exists."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        progress('plots skipped: matplotlib is not installed (pip install "cgic[eval]")')
        return
    from .reference_results import PUBLISHED_KODAK

    for metric in METRICS:
        figure, axes = plt.subplots(figsize=(6.4, 4.4))
        drawn = False
        for name in sorted({row.codec for row in rows}):
            points = []
            for target in targets:
                subset = [
                    r for r in rows if r.codec == name and r.target_bpp == target and getattr(r, metric) is not None
                ]
                if subset:
                    points.append((np.mean([r.bpp for r in subset]), np.mean([getattr(r, metric) for r in subset])))
            if points:
                xs, ys = zip(*points, strict=True)
                axes.plot(xs, ys, marker="o", linewidth=2.2 if name == "cgic" else 1.4, label=name)
                drawn = True
        if not drawn:
            plt.close(figure)
            continue
        for label, curves in PUBLISHED_KODAK:
            if metric in curves:
                xs, ys = zip(*curves[metric], strict=True)
                axes.plot(xs, ys, linestyle="--", marker=".", alpha=0.6, label=f"{label}, published")
        axes.set_xlabel("bits per pixel (from file sizes)")
        axes.set_ylabel(METRIC_LABELS[metric])
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7)
        figure.tight_layout()
        figure.savefig(out_dir / f"rd-{metric}.png", dpi=110)
        plt.close(figure)
