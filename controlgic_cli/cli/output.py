"""What the `cgic` command prints and how a run ends: per-file lines and JSON records, the progress bars,
the manifest, exit statuses, and Ctrl-C."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import traceback
import warnings

import click

from ..io.fileio import clear_stop, request_stop, stop_requested

# 128 + SIGINT: what a shell reports for a command stopped by Ctrl-C.
EXIT_INTERRUPTED = 130


class Reporter:
    """Where messages go: summaries and errors on stderr, JSON on stdout unless stdout carries data."""

    def __init__(self, quiet: bool, verbose: bool, as_json: bool, stdout_is_data: bool):
        self.quiet, self.verbose, self.as_json = quiet, verbose, as_json
        self.stdout_is_data = stdout_is_data

    @contextlib.contextmanager
    def python_warnings(self):
        """While a command runs: a library's Python warning (Pillow on an odd file, say) reads like any other
        warning, one line, no source location unless -v; Python's own printer is back after."""
        before = warnings.showwarning
        warnings.showwarning = self._python_warning
        try:
            yield
        finally:
            warnings.showwarning = before

    def _python_warning(self, message, category, filename, lineno, file=None, line=None) -> None:
        where = f" ({category.__name__} at {filename}:{lineno})" if self.verbose else ""
        self.warn(f"{message}{where}")

    def line(self, text: str) -> None:
        if not self.quiet:
            click.echo(text, err=True)

    def warn(self, text: str) -> None:
        if not self.quiet:
            click.echo(f"cgic: warning: {text}", err=True)

    def error(self, text: str) -> None:
        if self.verbose:
            traceback.print_exc()
        click.echo(f"cgic: error: {text}", err=True)

    def record(self, record: dict) -> None:
        if self.as_json:
            click.echo(json.dumps(record), err=self.stdout_is_data)


def command_reporter(quiet: bool, verbose: bool, as_json: bool, stdout_is_data: bool) -> Reporter:
    """The Reporter of the running click command, printing Python warnings (Reporter.python_warnings) until the
    command ends."""
    reporter = Reporter(quiet, verbose, as_json, stdout_is_data)
    click.get_current_context().with_resource(reporter.python_warnings())
    return reporter


def progress_bar():
    """A progress callback drawing a bar on stderr (when it is a terminal) for one file's long passes.

    The --tune psnr search and the measured planner take minutes on a large
    photo. Each phase counts from 0 again and gets its own bar; a bar shows
    only once its phase has run for a second (a Kodak-sized encode shows
    none) and goes away when it ends, before the file's summary line.
    """
    from tqdm import tqdm

    bars = []  # made at a phase's first call, so a file that fails earlier leaves no empty bar behind

    def advance(done: int, total: int) -> None:
        if not bars or done <= bars[-1].n:
            # Steps are seconds apart on a large photo: draw every one (mininterval 0).
            options = {"file": sys.stderr, "disable": None, "leave": False, "mininterval": 0, "delay": 1.0}
            bars.append(tqdm(total=total, desc="encoding", unit="step", **options))
        bars[-1].update(done - bars[-1].n)
        if done == total:
            bars[-1].close()

    return advance


def report_outcomes(
    outcomes,
    total: int,
    reporter: Reporter,
    summarise,
    manifest: str | None = None,
    verbose: bool = False,
    drain_on_interrupt: bool = True,
) -> None:
    """Print each FileOutcome as it arrives, append written files to the manifest, exit 1 if any failed.

    On Ctrl-C the outcomes of the work in hand are still taken (drain_on_interrupt; the local engines give
    them at once), so every file that landed is reported and in the manifest; then exit 130.
    """
    from tqdm import tqdm

    batch = total > 1
    progress = tqdm(total=total, file=sys.stderr, disable=None if batch and not reporter.quiet else True)
    manifest_file = None  # opened at the first file written, so a run that writes none leaves no manifest
    counts = {"failed": 0, "skipped": 0, "written": 0}

    def report(outcome) -> None:
        nonlocal manifest_file
        progress.update()
        task = outcome.task
        if outcome.interrupted:
            return
        if not outcome.ok:
            counts["failed"] += 1
            if verbose and outcome.traceback:
                click.echo(outcome.traceback, err=True, nl=False)
            click.echo(f"cgic: error: {task.source}: {outcome.error}", err=True)
            reporter.record({"input": task.source, "ok": False, "error": outcome.error})
            return
        if outcome.skipped:
            counts["skipped"] += 1
            _progress_line(progress, reporter, batch, f"{task.source}: skipped, {task.target} exists")
            reporter.record({**outcome.record, "ok": True, "skipped": True})
            return
        counts["written"] += 1
        for note in outcome.warnings:
            reporter.warn(f"{task.source}: {note}")
        _progress_line(progress, reporter, batch, summarise(outcome, verbose))
        reporter.record({**outcome.record, "ok": True})
        if manifest is not None:
            if manifest_file is None:
                manifest_file = open(manifest, "a", encoding="utf-8")  # noqa: SIM115 (closed below)
            keys = ("input", "output", "bytes", "bpp", "ratios", "seconds")
            manifest_file.write(json.dumps({k: outcome.record[k] for k in keys}) + "\n")
            manifest_file.flush()

    interrupted = False
    try:
        try:
            for outcome in outcomes:
                report(outcome)
        except KeyboardInterrupt:
            interrupted = True
            request_stop()
            if drain_on_interrupt:
                with contextlib.suppress(KeyboardInterrupt):
                    for outcome in outcomes:
                        report(outcome)
    finally:
        progress.close()
        if manifest_file is not None:
            manifest_file.close()
    if interrupted:
        click.echo(f"cgic: interrupted: {counts['written']} of {total} files written", err=True)
        sys.exit(EXIT_INTERRUPTED)
    failures, skips = counts["failed"], counts["skipped"]
    if batch:
        skip_note = f" ({skips} skipped, output exists)" if skips else ""
        reporter.line(f"{total - failures} of {total} files done{skip_note}, {failures} failed")
    if failures:
        sys.exit(1)


@contextlib.contextmanager
def stops_cleanly_on_ctrl_c():
    """Ctrl-C ends a run with exit status 130 and no traceback, without a half-reported batch.

    The first Ctrl-C tells fileio to let no more outputs land, and the run waits
    for the work in hand (report_outcomes); a second one ends the process at once.
    """
    clear_stop()

    def on_interrupt(signum, frame):
        if stop_requested():
            click.echo("cgic: interrupted again: stopping now", err=True)
            os._exit(EXIT_INTERRUPTED)
        request_stop()
        raise KeyboardInterrupt

    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, on_interrupt) if in_main_thread else None
    try:
        yield
    except KeyboardInterrupt:
        click.echo("cgic: interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    finally:
        if in_main_thread:
            signal.signal(signal.SIGINT, previous)


def _progress_line(progress, reporter: Reporter, batch: bool, text: str) -> None:
    if batch and not reporter.quiet:
        progress.write(text, file=sys.stderr)  # keeps the bar below the lines
    else:
        reporter.line(text)


def decode_summary(outcome, verbose: bool) -> str:
    record = outcome.record
    return (
        f"{record['input']} -> {record['output']}: {record['width']}x{record['height']} {record['mode']}, "
        f"{outcome.seconds:.2f} s"
    )


def encode_summary(outcome, verbose: bool) -> str:
    record = outcome.record
    text = (
        f"{record['input']} -> {record['output']}: {record['bytes']} bytes, {record['bpp']:.4f} bpp, "
        f"{record['width']}x{record['height']}, {outcome.seconds:.2f} s"
    )
    if "target_reached" in record:
        fine, medium, coarse = record["ratios"]
        text += f", ratios {fine:.4f},{medium:.4f},{coarse:.4f}"
    if "psnr" in record:
        text += f", {record['psnr']:.2f} dB"
    if verbose:
        text += f" (sections {record['section_bytes']}, tokens {record['tokens']})"
    return text
