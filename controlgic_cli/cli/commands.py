"""The `cgic` command: parses options, calls the library, prints results.

Conventions follow cwebp/cjxl: `-` is stdin/stdout, messages go to stderr
(stdout stays clean for image data and --json), exit status 0 on success, 1
when any file failed or input was bad, 2 for usage errors. Errors are one line;
-v adds tracebacks.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
from pathlib import Path

import click

from .. import __version__
from ..batch.core import decode_file, default_jobs, run_ordered
from ..coding import colour_correction
from ..coding.alpha_coding import unpack_alpha
from ..coding.container import (
    COLOUR_GREY,
    COLOUR_GREY_ALPHA,
    COLOUR_RGB,
    COLOUR_RGB_ALPHA,
    COLOUR_RGB_ALPHA_DROPPED,
    parse_file,
)
from ..coding.mask_coding import unpack_file_masks
from ..errors import CgicError, OptionsError
from ..io.fileio import STDIO, read_source
from ..io.image_io import IMAGE_SUFFIXES, output_format
from ..options import EncodeOptions, TargetConflict
from ..planning.ratios import ppm_to_ratios
from ..planning.tunes import DEFAULT_PLANNER, PLANNERS, TUNES
from .file_plan import FilePlan, plan_tasks
from .options import (
    CropType,
    FiniteFloatRange,
    MetadataType,
    RatiosType,
    ResizeType,
    common_options,
    model_options,
    skip_existing_option,
)
from .output import (
    EXIT_INTERRUPTED,
    Reporter,
    command_reporter,
    decode_summary,
    encode_summary,
    progress_bar,
    report_outcomes,
    stops_cleanly_on_ctrl_c,
)

COLOUR_NAMES = {
    COLOUR_GREY: "grey",
    COLOUR_RGB: "RGB",
    COLOUR_RGB_ALPHA_DROPPED: "RGB (alpha dropped)",
    COLOUR_RGB_ALPHA: "RGBA",
    COLOUR_GREY_ALPHA: "grey + alpha",
}


# click 8.2 and later raise this (a UsageError) for a group called without a command.
_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())


class _OneLineErrors(click.Group):
    """click, with a usage error printed as one line (exit 2) and Ctrl-C during start-up as exit 130."""

    def main(self, *args, **kwargs):
        kwargs["standalone_mode"] = False
        try:
            result = super().main(*args, **kwargs)
        except _NO_ARGS_IS_HELP as exc:  # `cgic` alone: the help, as click shows it
            exc.show()
            sys.exit(exc.exit_code)
        except click.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx is not None else "cgic"
            click.echo(f"cgic: error: {exc.format_message()} (see '{where} --help')", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("cgic: interrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)
        # --help and --version come back as their exit status; a command that ran as None.
        sys.exit(result if isinstance(result, int) else 0)


@click.group(cls=_OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cgic")
def main() -> None:
    """cgic: Control-GIC learned generative image codec.

    \b
      cgic encode photo.png --ratios 0.3,0.6,0.1     -> photo.cgic
      cgic decode photo.cgic                         -> photo.png
      cgic info photo.cgic
    """


def _plan_jobs(
    inputs: tuple[str, ...], output: str | None, suffixes: set[str], out_suffix: str, recursive: bool
) -> FilePlan:
    try:
        return plan_tasks(inputs, output, suffixes, out_suffix, recursive)
    except OptionsError as exc:
        raise click.UsageError(str(exc)) from None


def _stdout_is_a_terminal() -> bool:
    return sys.stdout.isatty()


def _refuse_data_to_a_terminal(tasks) -> None:
    """Like gzip and cwebp: binary output on a terminal is a mistake, and would garble it."""
    if any(task.target == STDIO for task in tasks) and _stdout_is_a_terminal():
        raise click.UsageError("not writing binary data to a terminal: redirect it (> file, | command) or give -o FILE")


def _check_manifest(manifest: str, tasks) -> None:
    """UsageError for a --manifest that cannot work, before any image is coded."""
    if manifest == STDIO:
        raise click.UsageError("--manifest takes a file name; --json prints the same records on stdout")
    path = Path(manifest)
    if not path.parent.is_dir():
        raise click.UsageError(f"--manifest {manifest}: its folder does not exist")
    if any(task.target != STDIO and os.path.abspath(task.target) == os.path.abspath(manifest) for task in tasks):
        raise click.UsageError(f"--manifest {manifest}: that is where an output goes")
    if path.is_file() and path.stat().st_size:
        # Appending to an existing manifest resumes it; appending to anything else would damage a user's file.
        with path.open("rb") as existing:
            first_line = existing.readline(1 << 16)
        try:
            is_manifest = isinstance(json.loads(first_line), dict)
        except ValueError:
            is_manifest = False
        if not is_manifest:
            raise click.UsageError(f"--manifest {manifest}: the file exists and is not a manifest (JSON lines)")


def _load_codec(weights: str | None, device: str, reporter: Reporter):
    from ..api import get_codec

    try:
        return get_codec(weights, device)
    except CgicError as exc:
        reporter.error(str(exc))
        sys.exit(1)


def _check_quality_scale(codec, quality: float, planner: str, reporter: Reporter) -> None:
    try:
        codec.quality_scale.threshold(quality, planner)
    except CgicError as exc:
        reporter.error(str(exc))
        sys.exit(1)


@main.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--output", help="Output file, '-' for stdout, or a directory (several inputs).")
@click.option(
    "-R",
    "--recursive",
    is_flag=True,
    help="Directory inputs: take the images in their subfolders too; outputs keep the subfolder paths.",
)
@click.option(
    "-r",
    "--ratios",
    type=RatiosType(),
    default=None,
    help="Area fractions coded at fine (H/4), medium (H/8) and coarse (H/16) granularity; "
    "more fine means more bits and detail.  [default: 0.3,0.6,0.1]",
)
@click.option(
    "--target-bpp",
    type=FiniteFloatRange(min=0, min_open=True),
    help="Choose the ratios per image so the file lands nearest this many bits per pixel.",
)
@click.option(
    "--target-size",
    type=click.IntRange(min=1),
    help="Choose the ratios per image for the largest file of at most this many bytes.",
)
@click.option(
    "--target-psnr",
    type=FiniteFloatRange(min=0, max=100, min_open=True, max_open=True),
    help="Choose the ratios per image for about the smallest file whose decoded image reaches this PSNR (dB); "
    "decodes about a dozen candidates, so encoding takes a few seconds more.",
)
@click.option(
    "--quality",
    type=FiniteFloatRange(min=0, max=100),
    help="Constant quality, 0-100: every image is cut at the same gain per token, so busy images get more bytes "
    "and every batch looks alike (about 0.14 bpp on average at 50 and 0.35 at 80 on the Kodak photos; "
    "100 sends everything fine).",
)
@click.option(
    "--budget",
    type=click.Choice(["image", "dataset"]),
    default="image",
    show_default=True,
    help="With --target-bpp: hit it on every image, or on the mean over all inputs "
    "(one shared threshold; the images that gain most from bits get them).",
)
@click.option(
    "--tune",
    type=click.Choice(TUNES),
    default="perceptual",
    show_default=True,
    help="perceptual: keep texture (the model as trained). psnr: search for indices that decode closer to "
    "the pixels: about +0.9 dB at the same size, less texture, encoding ~40x slower.",
)
@click.option(
    "--planner",
    type=click.Choice(PLANNERS),
    default=DEFAULT_PLANNER,
    show_default=True,
    help="How patches get their granularity. measured: decode every granularity and send fine tokens where "
    "they lower distortion most (best quality per byte; three extra decoder passes). entropy: the paper's "
    "patch entropy (fastest encoding).",
)
@click.option(
    "--metadata",
    type=MetadataType(),
    default="none",
    show_default=True,
    help="Keep the input's colour profile, Exif and XMP: none, all, or some of icc,exif,xmp (a version-2 file; "
    "decoding writes them back). Without icc, a non-sRGB photo is converted to sRGB. Orientation is applied "
    "to the pixels either way.",
)
@click.option(
    "--colour-correction/--no-colour-correction",
    default=True,
    show_default=True,
    help="Send a low-resolution colour correction fitted to the decoded image (a version-6 file; 2 % of the "
    "file, counted in every size target): flat colours keep their hue and photos gain PSNR at the same size. "
    "Off saves one decoder pass per file.",
)
@click.option(
    "--resize",
    type=ResizeType(),
    help="Resample each image to WIDTHxHEIGHT pixels before coding (Lanczos); a side of 0 keeps the aspect "
    "ratio, as in 1600x0.",
)
@click.option(
    "--print-psnr",
    is_flag=True,
    help="Decode each file written and print its PSNR against the input (over visible pixels with "
    "transparency); one decoder pass more per file.",
)
@click.option("-f", "--force", is_flag=True, help="Overwrite existing output files.")
@skip_existing_option
@click.option(
    "--manifest",
    type=click.Path(dir_okay=False),
    help="Append one JSON line per file written (input, output, bytes, bpp, ratios, seconds).",
)
@click.option(
    "-j",
    "--jobs",
    type=click.IntRange(min=1),
    default=None,
    help="Images in flight at once (local engine: threads sharing the cores; dask: local workers). "
    "[default: one per CPU core]",
)
@click.option(
    "--batch",
    type=click.IntRange(min=1),
    default=None,
    help="Images per network pass; consecutive same-size images share it (same bytes as one by one). "
    "[default: 1 on CPU, 8 on CUDA]",
)
@click.option(
    "--engine",
    type=click.Choice(["local", "dask"]),
    default="local",
    show_default=True,
    help='Where files are encoded: this process, or a Dask cluster (pip install "cgic[dask]").',
)
@click.option("--address", help="Dask scheduler address (default: start a local cluster with --jobs workers).")
@model_options
@common_options
def encode(
    inputs,
    output,
    recursive,
    ratios,
    target_bpp,
    target_size,
    target_psnr,
    quality,
    budget,
    tune,
    planner,
    metadata,
    colour_correction,
    resize,
    print_psnr,
    force,
    skip_existing,
    manifest,
    jobs,
    batch,
    engine,
    address,
    weights,
    device,
    verbose,
    quiet,
    as_json,
):
    """Encode images (files, directories or '-' for stdin) to .cgic."""
    from ..batch.core import EncodeSettings, default_batch, default_jobs

    if verbose and quiet:
        raise click.UsageError("-v and -q cannot be used together")
    try:
        options = EncodeOptions(
            ratios=ratios,
            target_bpp=target_bpp if budget == "image" else None,
            target_size=target_size,
            target_psnr=target_psnr,
            quality=quality,
            dataset_bpp=target_bpp if budget == "dataset" else None,
            tune=tune,
            planner=planner,
            metadata=metadata,
            resize=resize,
            colour_correction=colour_correction,
        )
    except TargetConflict:
        raise click.UsageError(
            "--ratios, --target-bpp, --target-size, --target-psnr and --quality are alternatives: give one"
        ) from None
    except OptionsError as exc:  # the option types have checked every value: not expected
        raise click.UsageError(str(exc)) from None
    if budget == "dataset" and target_bpp is None:
        raise click.UsageError("--budget dataset needs --target-bpp")
    if force and skip_existing:
        raise click.UsageError("-f and --skip-existing are opposites: give one")
    if address is not None and engine != "dask":
        raise click.UsageError("--address needs --engine dask")
    file_plan = _plan_jobs(inputs, output, IMAGE_SUFFIXES, ".cgic", recursive)
    tasks = file_plan.tasks
    _refuse_data_to_a_terminal(tasks)
    if manifest is not None:
        _check_manifest(manifest, tasks)
    if engine == "dask" and any(STDIO in (t.source, t.target) for t in tasks):
        raise click.UsageError("--engine dask reads and writes files, not '-'")
    reporter = command_reporter(quiet, verbose, as_json, stdout_is_data=any(t.target == STDIO for t in tasks))
    for note in file_plan.notes:
        reporter.warn(note)
    if quality is not None:  # a model without a quality scale: one message, not one per file
        _check_quality_scale(_load_codec(weights, device, reporter), quality, planner, reporter)
    settings = EncodeSettings(
        options, weights, device, overwrite=force, skip_existing=skip_existing, measure_psnr=print_psnr
    )
    if engine != "dask" and len(tasks) == 1 and not reporter.quiet:
        settings = dataclasses.replace(settings, progress=progress_bar())
    jobs = jobs or default_jobs()
    try:
        batch = batch or default_batch(device)
        with stops_cleanly_on_ctrl_c():
            if engine == "dask":
                from ..batch.distributed import encode_dask

                outcomes = encode_dask(tasks, settings, address, jobs, batch=batch)
            else:
                from ..batch.core import encode_local

                _load_codec(weights, device, reporter)  # a bad weights file fails once, before any file
                outcomes = encode_local(tasks, settings, jobs, batch=batch)
            # Dask workers are other processes, which fileio's stop does not reach: no waiting for them.
            report_outcomes(
                outcomes, len(tasks), reporter, encode_summary, manifest, verbose, drain_on_interrupt=engine != "dask"
            )
    except CgicError as exc:
        reporter.error(str(exc))
        sys.exit(1)


@main.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--output", help="Output image (format from its suffix, PNG by default), '-' or a directory.")
@click.option(
    "-R",
    "--recursive",
    is_flag=True,
    help="Directory inputs: take the .cgic files in their subfolders too; outputs keep the subfolder paths.",
)
@click.option("-f", "--force", is_flag=True, help="Overwrite existing output files.")
@skip_existing_option
@click.option(
    "--crop",
    type=CropType(),
    help="Decode only this part, left,top,width,height in pixels: the same pixels as a whole decode, "
    "and on a large photo only the 2048 px tiles it meets run (a detail of 24 MP in a fraction of the time).",
)
@click.option(
    "-j",
    "--jobs",
    type=click.IntRange(min=1),
    default=None,
    help="Files in flight at once (threads sharing the cores).  [default: one per CPU core]",
)
@model_options
@common_options
def decode(
    inputs, output, recursive, force, skip_existing, crop, jobs, weights, device, verbose, quiet, as_json
) -> None:
    """Decode .cgic files (or '-' for stdin) to PNG."""
    if verbose and quiet:
        raise click.UsageError("-v and -q cannot be used together")
    if force and skip_existing:
        raise click.UsageError("-f and --skip-existing are opposites: give one")
    file_plan = _plan_jobs(inputs, output, {".cgic"}, ".png", recursive)
    tasks = file_plan.tasks
    _refuse_data_to_a_terminal(tasks)
    for task in tasks:
        try:
            output_format(task.target)
        except CgicError as exc:
            raise click.UsageError(str(exc)) from None
    reporter = command_reporter(quiet, verbose, as_json, stdout_is_data=any(t.target == STDIO for t in tasks))
    for note in file_plan.notes:
        reporter.warn(note)
    with stops_cleanly_on_ctrl_c():
        if weights is None:
            from ..api import FileDecoder

            # Each file decodes with the shipped model that wrote it; the default loads first, so a broken
            # installation fails once, before any file.
            _load_codec(None, device, reporter)
            codec = FileDecoder(device)
        else:
            codec = _load_codec(weights, device, reporter)
        # Threads overlap one file's decoder pass with another's PNG writing: 24 Kodak files decoded
        # in 8.5-9.0 s on two threads against 12.5-13.2 s one at a time (2-core AVX-512 Xeon VM, 2026-12-06).
        outcomes = run_ordered(
            lambda task: decode_file(task, codec, force, skip_existing, crop), tasks, jobs or default_jobs()
        )
        report_outcomes(outcomes, len(tasks), reporter, decode_summary, verbose=verbose)


@main.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per file.")
@click.option("-v", "--verbose", is_flag=True, help="Tracebacks on errors.")
def info(inputs, as_json, verbose) -> None:
    """Show what a .cgic file holds (checks all but the index streams, whose codes are in the model; loads no
    model)."""
    reporter = command_reporter(False, verbose, as_json, stdout_is_data=False)
    failures = 0
    for source in inputs:
        try:
            data = read_source(source)
            header, sections = parse_file(data)
            unpack_file_masks(sections.masks, header.width, header.height, sections.grouped_masks)
            if sections.alpha:
                unpack_alpha(sections.alpha, header.width, header.height)
            correction = (
                colour_correction.unpack(sections.correction, header.width, header.height)
                if sections.correction
                else None
            )
        except (CgicError, OSError) as exc:
            failures += 1
            message = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            reporter.error(f"{source}: {message}")
            reporter.record({"input": source, "ok": False, "error": message})
            continue
        ratios = ppm_to_ratios(header.ratios)
        section_bytes = sections.sizes()
        version = sections.format_version
        metadata = {kind: len(part) for kind, part in sections.metadata.records()}
        record = {
            "input": source,
            "ok": True,
            "format_version": version,
            "index_coding": "group" if sections.grouped else "neighbour-rank" if sections.rank_coded else "usage",
            "width": header.width,
            "height": header.height,
            "colour": COLOUR_NAMES[header.colour_mode],
            "ratios": list(ratios),
            "rate_controlled": header.rate_controlled,
            "model_id": header.model_id.hex(),
            "bytes": len(data),
            "bpp": round(8 * len(data) / (header.width * header.height), 6),
            "section_bytes": section_bytes,
            "metadata": metadata,
            "colour_correction": None if correction is None else {"block": correction.block, "step": correction.step},
        }
        if as_json:
            click.echo(json.dumps(record))
            continue
        click.echo(
            f"{source}: cgic v{version}, {header.width}x{header.height} {record['colour']}, {len(data)} bytes, "
            f"{record['bpp']:.4f} bpp\n"
            f"  ratios (fine, medium, coarse): {ratios[0]:.6g}, {ratios[1]:.6g}, {ratios[2]:.6g}"
            f"{' (rate control)' if header.rate_controlled else ''}\n"
            f"  model: {record['model_id']}, {record['index_coding']} coded indices\n"
            f"  sections: " + ", ".join(f"{k} {v}" for k, v in section_bytes.items())
        )
        if metadata:
            click.echo("  metadata: " + ", ".join(f"{kind} {size} bytes" for kind, size in metadata.items()))
        if correction is not None:
            click.echo(f"  colour correction: {correction.block} px cells, steps of {correction.step} levels")
    if failures:
        sys.exit(1)


@main.command(name="eval")
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(file_okay=False), help="Results folder.")
@click.option(
    "--codecs",
    default="cgic,jpeg,webp,avif",
    show_default=True,
    help="Comma-separated: cgic, cgic-psnr (cgic with --tune psnr), jpeg, webp, avif, jxl "
    '(AVIF needs a Pillow built with it; jxl needs pip install "cgic[eval]").',
)
@click.option("--targets", default="0.1,0.2,0.39,0.6", show_default=True, help="Comma-separated target bpp.")
@click.option(
    "--metric-weights",
    type=click.Path(exists=True, file_okay=False),
    help="Folder with the LPIPS/DISTS/NIQE weights (default $CGIC_METRIC_WEIGHTS); without it those are skipped.",
)
@click.option("--weights", type=click.Path(dir_okay=False), default=None, help="cgic weights file.")
@click.option("--limit", type=click.IntRange(min=0), default=0, help="Only the first N images (0: all).")
@click.option(
    "--gallery",
    "gallery_images",
    type=click.IntRange(min=0),
    default=0,
    help="Side-by-side crops (original, cgic, classic codecs at the same bpp) of the first N images at each target.",
)
@click.option("-q", "--quiet", is_flag=True)
@click.option("-v", "--verbose", is_flag=True)
def evaluate(folder, out_dir, codecs, targets, metric_weights, weights, limit, gallery_images, quiet, verbose) -> None:
    """Rate-distortion evaluation of cgic and classic codecs at equal bitrates."""
    from ..eval.evaluate import available_codecs, evaluate_folder

    chosen = list(dict.fromkeys(c.strip() for c in codecs.split(",") if c.strip()))  # each once, in order
    if not chosen:
        raise click.UsageError(f"--codecs names no codec; available: {available_codecs()}")
    unknown = sorted(set(chosen) - set(available_codecs()))
    if unknown:
        raise click.UsageError(f"unknown or unavailable codecs {unknown}; available: {available_codecs()}")
    try:
        target_values = list(dict.fromkeys(float(t) for t in targets.split(",")))
    except ValueError:
        raise click.UsageError(f"--targets must be numbers, got {targets!r}") from None
    if not all(0 < t < math.inf for t in target_values):
        raise click.UsageError("--targets must be positive and finite")
    reporter = command_reporter(quiet, verbose, False, stdout_is_data=False)
    unreadable: list[str] = []
    try:
        rows = evaluate_folder(
            Path(folder),
            Path(out_dir),
            chosen,
            target_values,
            metric_weights,
            weights,
            limit,
            reporter.line,
            gallery_images,
            show_bar=not quiet,
            on_unreadable=unreadable.append,
        )
    except CgicError as exc:
        reporter.error(str(exc))
        sys.exit(1)
    for message in unreadable:
        click.echo(f"cgic: error: {message}", err=True)
    unreadable_note = f"; {len(unreadable)} images unreadable" if unreadable else ""
    reporter.line(f"{len(rows)} results in {out_dir}{unreadable_note}")
    if unreadable:
        sys.exit(1)


if __name__ == "__main__":
    main()
