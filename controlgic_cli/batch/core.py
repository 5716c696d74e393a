"""Encoding many files: the per-file work, a local pipeline, and dataset budgets.

Every engine (the local pipeline here, Dask in distributed.py) runs the same
per-file functions below, so the files they write are byte-identical; they
differ only in where the functions run. Each function takes plain,
picklable arguments and loads its codec through api.get_codec, which caches
one codec per process.

Dataset budgets (one planner-score threshold shared by all images) run as
map -> reduce -> map: summarise_files turns each image into its rate path
(exact file size at every step, from one network pass), choose_steps picks
every image's step for the mean target, and encode_files writes each file at
its step (planning.rate.dataset_choices, the same as Codec.encode_dataset).
The write pass runs the network again rather than holding every
image's analysis in memory, so memory stays flat however many images there are.
"""

from __future__ import annotations

import os
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sized
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace

from ..errors import CgicError, Interrupted
from ..io.fileio import STDIO, check_target, clear_stop, read_source, request_stop, stop_requested, write_target
from ..io.image_io import SourceImage, encode_image_file, load_image, loses_alpha, output_format, resize_source
from ..options import EncodeOptions
from ..planning.rate import RateChoice, RateSummary, dataset_choices
from ..planning.ratios import NAMES as GRANULARITY_NAMES


@dataclass(frozen=True, init=False)
class EncodeSettings:
    """An engine's settings: the encode options (what the files hold) and how the run goes around them.

    EncodeSettings(options, weights=..., device=...), or with the options'
    fields as keywords in place of `options`: EncodeSettings(ratios=(0.3, 0.6, 0.1), tune="psnr").
    """

    options: EncodeOptions = EncodeOptions()
    weights: str | None = None
    device: str = "auto"
    overwrite: bool = False
    skip_existing: bool = False  # an existing output counts as done (resuming an interrupted batch)
    torch_threads: int | None = None  # set in each worker process by engines that own their workers
    measure_psnr: bool = False  # decode each file written and report its PSNR (one decoder pass more)
    # (done, total) as a --tune psnr search, then the measured planner's passes, advance
    # (Codec.analyse_many; local runs only: it does not travel to workers).
    progress: Callable[[int, int], None] | None = field(default=None, compare=False)

    def __init__(
        self,
        options: EncodeOptions | None = None,
        weights: str | None = None,
        device: str = "auto",
        overwrite: bool = False,
        skip_existing: bool = False,
        torch_threads: int | None = None,
        measure_psnr: bool = False,
        progress: Callable[[int, int], None] | None = None,
        **option_fields,
    ):
        if options is None:
            options = EncodeOptions(**option_fields)
        elif option_fields:
            raise TypeError(f"give options or their fields ({', '.join(option_fields)}), not both")
        elif not isinstance(options, EncodeOptions):
            raise TypeError(f"options must be an EncodeOptions, not {type(options).__name__}")
        for name, value in (
            ("options", options),
            ("weights", weights),
            ("device", device),
            ("overwrite", overwrite),
            ("skip_existing", skip_existing),
            ("torch_threads", torch_threads),
            ("measure_psnr", measure_psnr),
            ("progress", progress),
        ):
            object.__setattr__(self, name, value)

    def for_dataset(self, target_bpp: float | None) -> EncodeSettings:
        """These settings under a dataset budget of target_bpp (the engines' dataset_target); as they are for None."""
        if target_bpp is None:
            return self
        return replace(self, options=self.options.retarget(dataset_bpp=target_bpp))


@dataclass(frozen=True)
class FileTask:
    source: str  # a path, or "-" for stdin
    target: str  # a path, or "-" for stdout


@dataclass
class FileOutcome:
    """What happened to one file; `record` is what --json and the manifest print."""

    task: FileTask
    ok: bool
    record: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    error: str = ""
    skipped: bool = False
    traceback: str = ""  # shown with -v
    interrupted: bool = False  # not written: the run was interrupted before it landed

    @property
    def seconds(self) -> float:
        return float(self.record.get("seconds", 0.0))


@dataclass(frozen=True)
class FileSummary:
    """The map output of a dataset budget: an image's rate summary and pixel count, or why it failed."""

    task: FileTask
    rates: RateSummary | None
    pixels: int
    error: str = ""


def _codec(settings: EncodeSettings):
    from ..api import get_codec

    if settings.torch_threads is not None:
        import torch

        if torch.get_num_threads() != settings.torch_threads:
            torch.set_num_threads(settings.torch_threads)
    return get_codec(settings.weights, settings.device)


def error_text(exc: Exception) -> str:
    """One line for an error, with the file name for OS errors."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror} {exc.filename}" if exc.filename else exc.strerror
    return str(exc)


def finished_earlier(task: FileTask, skip_existing: bool) -> bool:
    """With skip_existing, whether the task's output exists: outputs appear only when complete
    (atomic writes), so an existing one is a finished one."""
    return skip_existing and task.target != STDIO and os.path.exists(task.target)


def decode_file(
    task: FileTask, codec, overwrite: bool = False, skip_existing: bool = False, crop: tuple | None = None
) -> FileOutcome:
    """Read, decode and atomically write one .cgic file (image format from the target's suffix); never raises
    for bad input or I/O trouble. crop: (left, top, width, height) to decode only that part (Codec.decode)."""
    if stop_requested():
        return not_written(task)
    if finished_earlier(task, skip_existing):
        return skipped(task)
    started = time.perf_counter()
    notes: list[str] = []
    try:
        check_target(task.target, overwrite)
        image = codec.decode(read_source(task.source), crop)
        write_target(task.target, encode_image_file(image, task.target, notes), overwrite)
    except Interrupted:
        return not_written(task)
    except (CgicError, OSError) as exc:
        return FileOutcome(task, ok=False, error=error_text(exc), traceback=traceback.format_exc())
    record = {
        "input": task.source,
        "output": task.target,
        "width": image.width,
        "height": image.height,
        "mode": image.mode,
        "seconds": round(time.perf_counter() - started, 3),
    }
    if loses_alpha(image, task.target):
        notes.append(f"{output_format(task.target)} has no alpha channel: composited over white")
    return FileOutcome(task, ok=True, record=record, warnings=notes)


def encode_files(items: list[tuple[FileTask, RateChoice | None]], settings: EncodeSettings) -> list[FileOutcome]:
    """Read, encode and atomically write each (task, choice); never raises for bad input or I/O trouble.

    choice: the image's step on its rate path under a dataset budget
    (choose_steps); None for the options' other targets. Same-size
    images share network passes; each file's bytes are those it would get in
    a call of its own. Its "seconds" is its own reading and writing plus an
    equal share of the shared passes.
    """
    outcomes: list[FileOutcome | None] = [None] * len(items)
    loaded = []  # (position, SourceImage, seconds spent on it alone)
    for position, (task, _) in enumerate(items):
        began = time.perf_counter()
        if stop_requested():
            outcomes[position] = not_written(task)
            continue
        if finished_earlier(task, settings.skip_existing):
            outcomes[position] = skipped(task)
            continue
        try:
            check_target(task.target, settings.overwrite)
            loaded.append((position, _load(task, settings), time.perf_counter() - began))
        except (CgicError, OSError) as exc:
            outcomes[position] = FileOutcome(task, ok=False, error=error_text(exc), traceback=traceback.format_exc())
    if loaded:
        analyses, shared = _analyse_together([source for _, source, _ in loaded], settings)
        for (position, source, alone), analysis in zip(loaded, analyses, strict=True):
            task, choice = items[position]
            outcomes[position] = _write_one(task, settings, source, analysis, choice, alone + shared)
    return outcomes


def _load(task: FileTask, settings: EncodeSettings) -> SourceImage:
    """The image to code: the input as read, resized when the options ask."""
    options = settings.options
    source = load_image(read_source(task.source), options.metadata)
    return source if options.resize is None else resize_source(source, options.resize)


def _analyse_together(sources: list[SourceImage], settings: EncodeSettings) -> tuple[list, float]:
    """Shared network passes for loaded images, and each one's share of their time.

    None in place of every analysis when the batch fails: one image the network
    refuses (too large, say) must not sink the others, so the callers go on one
    by one and each failure (a bad weights file included) lands on its own file.
    """
    began = time.perf_counter()
    try:
        analyses = _codec(settings).analyse_many(
            sources,
            settings.options.tune,
            on_progress=settings.progress,
            planner=settings.options.planner,
            colour_correction=settings.options.colour_correction,
        )
    except (CgicError, OSError):
        analyses = [None] * len(sources)
    return analyses, (time.perf_counter() - began) / len(sources)


def _analyse_alone(codec, source: SourceImage, settings: EncodeSettings):
    options = settings.options
    return codec.analyse(
        source,
        options.tune,
        on_progress=settings.progress,
        planner=options.planner,
        colour_correction=options.colour_correction,
    )


def _write_one(
    task: FileTask,
    settings: EncodeSettings,
    source: SourceImage,
    analysis,
    choice: RateChoice | None,
    seconds: float,
) -> FileOutcome:
    began = time.perf_counter()
    try:
        codec = _codec(settings)
        if analysis is None:
            analysis = _analyse_alone(codec, source, settings)
        result = codec.encode_analysis_with(analysis, settings.options, choice)
        write_target(task.target, result.data, settings.overwrite)
        measured = result.psnr
        if settings.measure_psnr and measured is None:
            measured = codec.measure_psnr(source, result.data)
    except Interrupted:
        return not_written(task)
    except (CgicError, OSError) as exc:
        return FileOutcome(task, ok=False, error=error_text(exc), traceback=traceback.format_exc())
    stats = result.stats
    record = {
        "input": task.source,
        "output": task.target,
        "bytes": stats.size_bytes,
        "bpp": round(stats.bpp, 6),
        "width": stats.width,
        "height": stats.height,
        "ratios": list(stats.ratios),
        "tune": settings.options.tune,
        "planner": settings.options.planner,
        "tokens": dict(zip(GRANULARITY_NAMES, stats.token_counts, strict=True)),
        "section_bytes": stats.section_bytes,
        "seconds": round(seconds + time.perf_counter() - began, 3),
    }
    if result.target_reached is not None:
        record["target_reached"] = result.target_reached
    if measured is not None:
        record["psnr"] = round(measured, 3)
    return FileOutcome(task, ok=True, record=record, warnings=list(result.warnings))


def summarise_files(tasks: list[FileTask], settings: EncodeSettings) -> list[FileSummary]:
    """Map step of a dataset budget: each image's exact size at every step; same-size images share network passes."""
    summaries: list[FileSummary | None] = [None] * len(tasks)
    loaded = []  # (position, SourceImage)
    for position, task in enumerate(tasks):
        try:
            loaded.append((position, _load(task, settings)))
        except (CgicError, OSError) as exc:
            summaries[position] = FileSummary(task, None, 0, error_text(exc))
    if loaded:
        analyses, _ = _analyse_together([source for _, source in loaded], settings)
        for (position, source), analysis in zip(loaded, analyses, strict=True):
            summaries[position] = _summarise_one(tasks[position], settings, source, analysis)
    return summaries


def _summarise_one(task: FileTask, settings: EncodeSettings, source: SourceImage, analysis) -> FileSummary:
    try:
        codec = _codec(settings)
        if analysis is None:
            analysis = _analyse_alone(codec, source, settings)
    except (CgicError, OSError) as exc:
        return FileSummary(task, None, 0, error_text(exc))
    return FileSummary(task, codec.rate_path(analysis).summary(), source.width * source.height)


def choose_steps(summaries: list[FileSummary], target_bpp: float) -> dict[str, RateChoice]:
    """Reduce step of a dataset budget: each readable image's choice for the mean target (dataset_choices)."""
    usable = [s for s in summaries if s.rates is not None]
    choices = dataset_choices([s.rates for s in usable], [s.pixels for s in usable], target_bpp)
    return {s.task.source: choice for s, choice in zip(usable, choices, strict=True)}


def skipped(task: FileTask) -> FileOutcome:
    return FileOutcome(task, ok=True, skipped=True, record={"input": task.source, "output": task.target})


def failed(task: FileTask, error: str) -> FileOutcome:
    return FileOutcome(task, ok=False, error=error)


def not_written(task: FileTask) -> FileOutcome:
    return FileOutcome(task, ok=False, error="interrupted", interrupted=True)


def default_jobs() -> int:
    """Workers for the local pipeline: one per usable CPU core (the fastest setting measured, docs/scaling.md)."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def default_batch(device: str = "auto") -> int:
    """Images per network pass: 1 on a CPU (batches measured no faster there, docs/scaling.md), 8 on CUDA."""
    from ..api import resolve_device

    return 8 if resolve_device(device).type == "cuda" else 1


def run_ordered(work: Callable, items: Iterable, jobs: int) -> Iterator:
    """work(item) for every item on `jobs` threads, yielded in input order.

    torch releases the GIL inside its kernels, so threads overlap one image's
    network pass with another's; each gets an equal share of the cores
    (torch's thread count is per process), which on a CPU beats splitting
    every convolution over all cores. At most 2 x jobs items are in flight,
    so memory does not grow with the batch.
    """
    if isinstance(items, Sized):
        # Workers beyond the items would idle while holding their share of the cores.
        jobs = min(jobs, len(items))
    if jobs <= 1:
        yield from map(work, items)
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(max(1, default_jobs() // jobs))
    try:
        with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="cgic") as pool:
            pending: deque[Future] = deque()
            interrupted = False
            for item in items:
                if interrupted or stop_requested():
                    break
                pending.append(pool.submit(work, item))
                if len(pending) >= 2 * jobs:
                    outcome, interrupted = _next_result(pending, interrupted)
                    yield outcome
            # After an interrupt the work in hand still comes back: what was written is reported, the rest
            # (the writes refused by fileio, the items not started) comes back at once as not written.
            while pending:
                outcome, interrupted = _next_result(pending, interrupted)
                yield outcome
            if interrupted:
                raise KeyboardInterrupt
    finally:
        # The workers are done (the pool has joined them), so a later run in this process may write again.
        clear_stop()
        torch.set_num_threads(before)


def _next_result(pending: deque[Future], interrupted: bool) -> tuple:
    """(result of the oldest pending work, whether the run was interrupted while waiting for it)."""
    while True:
        try:
            result = pending[0].result()
        except KeyboardInterrupt:
            request_stop()  # (the CLI's signal handler has already) no output lands from now on
            interrupted = True
            continue
        pending.popleft()
        return result, interrupted


def chunks(items: list, size: int) -> list[list]:
    """Consecutive groups of `size` (the last one shorter): the images that share network passes."""
    size = max(1, size)
    return [items[start : start + size] for start in range(0, len(items), size)]


def encode_local(
    tasks: list[FileTask],
    settings: EncodeSettings,
    jobs: int,
    dataset_target: float | None = None,
    batch: int = 1,
) -> Iterator[FileOutcome]:
    """The local engine: every task's outcome, in task order.

    `jobs` workers each take `batch` consecutive files at a time, whose
    same-size images go through the network together. dataset_target: a
    dataset budget in place of the options' target (EncodeOptions(dataset_bpp=...) is the same).
    """
    settings = settings.for_dataset(dataset_target)

    def write_chunk(pairs: list[tuple[FileTask, int | None]]) -> list[FileOutcome]:
        return encode_files(pairs, settings)

    def write_all(pairs):
        for outcomes in run_ordered(write_chunk, chunks(pairs, batch), jobs):
            yield from outcomes

    if settings.options.dataset_bpp is None:
        yield from write_all([(task, None) for task in tasks])
        return
    summaries = [
        summary
        for group in run_ordered(lambda group: summarise_files(group, settings), chunks(tasks, batch), jobs)
        for summary in group
    ]
    yield from write_dataset(summaries, settings.options.dataset_bpp, write_all)


def write_dataset(summaries: list[FileSummary], target_bpp: float, write_all) -> Iterator[FileOutcome]:
    """Shared by every engine: reduce to steps, write the readable images, report failures in order."""
    choices = choose_steps(summaries, target_bpp)
    pairs = [(s.task, choices[s.task.source]) for s in summaries if s.rates is not None]
    written = iter(write_all(pairs))
    for summary in summaries:
        if summary.rates is None:
            yield failed(summary.task, summary.error)
            continue
        outcome = next(written, None)
        if outcome is None:  # an interrupt stopped the writing (run_ordered): no more files come
            return
        yield outcome
