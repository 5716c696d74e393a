"""The Dask engine: the per-file functions of core.py, run on a Dask cluster.

Why Dask and not Ray: docs/scaling.md. Dask is an optional extra
(`pip install "cgic[dask]"`); nothing else imports this module.

Workers need cgic installed and the inputs and outputs on a shared
filesystem: tasks carry paths, not image bytes, so the client never becomes
a bottleneck for pixel data, and each worker writes its files atomically
itself. Results come back as small records (FileOutcome), in task order.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import replace

from ..errors import OptionsError
from .core import EncodeSettings, FileOutcome, FileTask, chunks, encode_files, summarise_files, write_dataset


def _dask():
    try:
        from dask import distributed
    except ImportError:
        raise OptionsError('--engine dask needs Dask: pip install "cgic[dask]"') from None
    return distributed


def encode_dask(
    tasks: list[FileTask],
    settings: EncodeSettings,
    address: str | None = None,
    workers: int = 2,
    dataset_target: float | None = None,
    batch: int = 1,
) -> Iterator[FileOutcome]:
    """Every task's outcome, in task order, computed on the cluster at `address` (None: a local one).

    dataset_target: as encode_local's (a dataset budget in place of the options' target).
    """
    distributed = _dask()
    settings = settings.for_dataset(dataset_target)
    cluster = None
    if address is None:
        # One single-threaded process per worker, each running torch on an
        # equal share of the cores: no GIL contention, no oversubscription.
        cluster = distributed.LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        )
        settings = replace(settings, torch_threads=1)
    try:
        client = distributed.Client(cluster if cluster is not None else address)
    except (OSError, TimeoutError, ValueError) as exc:
        if cluster is not None:
            cluster.close()
        raise OptionsError(f"cannot connect to the Dask scheduler at {address}: {exc}") from None
    try:

        def write_all(pairs):
            # One Dask task per `batch` consecutive files, which share network passes on their worker.
            for future in client.map(encode_files, chunks(pairs, batch), settings=settings, pure=False):
                yield from future.result()

        if settings.options.dataset_bpp is None:
            yield from write_all([(task, None) for task in tasks])
        else:
            groups = client.map(summarise_files, chunks(tasks, batch), settings=settings, pure=False)
            summaries = [summary for group in client.gather(groups) for summary in group]
            yield from write_dataset(summaries, settings.options.dataset_bpp, write_all)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
