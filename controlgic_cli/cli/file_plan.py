"""Which files a command reads, and where each one's output goes.

A file named on the command line writes NAME.<suffix> beside itself, or to
the name -o gives. A directory contributes the files in it with a matching
suffix (hidden ones left out: `._IMG_0001.jpg` files are macOS resource
forks, not photos), and with `recursive` those of its subfolders too; the
outputs go to the -o folder, or beside each input, keeping the path below
the directory named: `cgic encode photos -R -o out` writes photos/a/b/x.jpg
to out/a/b/x.cgic. Subfolders are walked in name order without following
links, so a run lists the same files in the same order every time.

Two inputs that would write the same output (x.jpg beside x.png, or two
folders holding the same names) are refused before any work: with -f the
second would replace the first's file and the run would still report both
done, and without -f it would fail half way through.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path, PurePath

from ..batch.core import FileTask
from ..errors import OptionsError
from ..io.fileio import STDIO, folder_files


@dataclass
class FilePlan:
    tasks: list[FileTask]
    # One line per directory that gave no input file, for the user to see: an empty batch is not an error.
    notes: list[str] = field(default_factory=list)


# How many clashing outputs an error message names before it just counts them.
_CLASHES_SHOWN = 3


def _list_inputs(
    inputs: tuple[str, ...], suffixes: set[str], recursive: bool, notes: list[str]
) -> tuple[list[tuple[str, PurePath]], bool]:
    """(source, output name without suffix) for every input file; second value: is it a batch.

    A named file's output name is its stem; a directory's files keep their
    path below the directory. A directory without input files adds a line to `notes`.
    """
    found: list[tuple[str, PurePath]] = []
    batch = False  # a directory makes a batch, and so do several files
    for item in inputs:
        path = Path(item)
        if item != STDIO and path.is_dir():
            batch = True
            files = folder_files(path, suffixes, recursive)
            found.extend((str(file), file.relative_to(path).with_suffix("")) for file in files)
            if not files:
                notes.append(_empty_folder_note(path, suffixes, recursive))
        else:
            found.append((item, PurePath("stdin" if item == STDIO else path.stem)))
    found = _without_repeats(found)
    batch = batch or len(found) > 1
    if batch and any(source == STDIO for source, _ in found):
        raise OptionsError("'-' (stdin) cannot be mixed with other inputs")
    return found, batch


def plan_tasks(
    inputs: tuple[str, ...], output: str | None, suffixes: set[str], out_suffix: str, recursive: bool = False
) -> FilePlan:
    """One FileTask per input file (see the module docstring); creates the output folders a batch needs.

    OptionsError for a combination that cannot work: stdin among several
    inputs, several inputs to stdout, or two inputs with one output.
    """
    notes: list[str] = []
    found, batch = _list_inputs(inputs, suffixes, recursive, notes)
    if not batch:
        source, name = found[0]
        if output is None:
            target = STDIO if source == STDIO else str(Path(source).with_suffix(out_suffix))
        elif output != STDIO and (Path(output).is_dir() or _names_a_folder(output)):
            _make_folders([Path(output)])
            target = str(Path(output) / (name.name + out_suffix))
        else:
            target = output
        tasks = [FileTask(source, target)]
        _refuse_overwriting_inputs(tasks)
        return FilePlan(tasks)
    if output == STDIO:
        raise OptionsError("-o - (stdout) takes a single input, not several files or a directory")
    if output is not None and not Path(output).is_dir() and Path(output).suffix and not _names_a_folder(output):
        # `-o all.cgic` for several inputs is more likely a slip than a folder name.
        raise OptionsError(
            f"-o {output}: several inputs write into a folder, and this looks like a file name "
            f"(end it with {os.sep} to make a folder of that name)"
        )
    tasks = [FileTask(source, _batch_target(source, name, output, out_suffix)) for source, name in found]
    _refuse_clashes(tasks)
    _refuse_overwriting_inputs(tasks)
    if output is not None:
        _make_folders(sorted({Path(output), *(Path(task.target).parent for task in tasks)}))
    return FilePlan(tasks, notes)


def _names_a_folder(output: str) -> bool:
    """A trailing slash says the output is a folder, whether or not it exists yet."""
    return output.endswith(("/", os.sep))


def _make_folders(folders: list[Path]) -> None:
    for folder in folders:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise OptionsError(f"-o {folder}: a file of that name is in the way of the output folder") from None
        except OSError as exc:
            raise OptionsError(f"-o {folder}: cannot make the output folder ({exc.strerror})") from None


def _without_repeats(found: list[tuple[str, PurePath]]) -> list[tuple[str, PurePath]]:
    """The inputs with a file named twice (`x.png x.png`, or a folder and a file in it) kept once."""
    seen, kept = set(), []
    for source, name in found:
        key = source if source == STDIO else os.path.normcase(os.path.realpath(source))
        if key not in seen:
            seen.add(key)
            kept.append((source, name))
    return kept


def _refuse_overwriting_inputs(tasks: list[FileTask]) -> None:
    """-f must not let an output replace an input (`cgic encode x.png -o x.png -f`), not even through a link."""
    for task in tasks:
        if STDIO in (task.source, task.target):
            continue
        try:
            same = os.path.samefile(task.source, task.target)
        except OSError:  # one of them does not exist (yet)
            same = False
        if same:
            raise OptionsError(f"{task.source}: the output would replace the input")


def _empty_folder_note(folder: Path, suffixes: set[str], recursive: bool) -> str:
    kind = f"{next(iter(suffixes))} files" if len(suffixes) == 1 else "images"
    has_subfolders = not recursive and any(p.is_dir() and not p.name.startswith(".") for p in folder.iterdir())
    hint = " (its subfolders are left out without -R)" if has_subfolders else ""
    return f"{folder}: no {kind} in it{hint}"


def _batch_target(source: str, name: PurePath, output: str | None, out_suffix: str) -> str:
    if output is None:
        return str(Path(source).with_suffix(out_suffix))
    return str(Path(output) / name) + out_suffix


def _refuse_clashes(tasks: list[FileTask]) -> None:
    first_source: dict[str, str] = {}
    clashes = []
    for task in tasks:
        key = os.path.normcase(os.path.abspath(task.target))
        if key in first_source:
            clashes.append(f"{first_source[key]} and {task.source} -> {task.target}")
        else:
            first_source[key] = task.source
    if clashes:
        shown = "; ".join(clashes[:_CLASHES_SHOWN])
        more = f" (and {len(clashes) - _CLASHES_SHOWN} more)" if len(clashes) > _CLASHES_SHOWN else ""
        raise OptionsError(f"two inputs would write the same output: {shown}{more}; rename one or encode them apart")
