"""Folder runs on a Ray cluster (`fastdenoise run --executor ray`): the driver lists INPUT and keeps the manifest; Ray
Data decodes on CPU tasks, denoises (and runs the head) in an actor pool, one actor per GPU (CPU actors where there
are none), and writes on CPU tasks. The stages are the local runner's own pieces, so the guarantees are the same: one
manifest row per input, atomic outputs, resume, a row per failed file, nothing written outside OUTPUT. Ray restarts
an actor that dies and runs its batch again. INPUT and OUTPUT must be at the same path on every node."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from fastdenoise.backends import BackendConfig, make_backend
from fastdenoise.choices import Executor
from fastdenoise.distributed import Shard
from fastdenoise.encoders import DEFAULT_PNG_LEVEL
from fastdenoise.images import FORMATS, Entry
from fastdenoise.models.denoiser import Denoiser
from fastdenoise.pipeline.inference import GroupError, denoise_group
from fastdenoise.pipeline.loaders import make_loader
from fastdenoise.pipeline.outputs import Item, OutputTree, Recorder, triage
from fastdenoise.pipeline.predictions import Prediction, Predictor, write_predictions
from fastdenoise.pipeline.runner import RunConfig, check_run, finish, open_run, recipe_of
from fastdenoise.pipeline.selection import list_inputs, lists_everything
from fastdenoise.pipeline.summary import RunSummary

__all__ = ["ClusterConfig", "ClusterError", "Executor", "connect", "denoise_on_cluster"]


# Columns that name an item in every stage (an Item, flattened for Arrow); "" stands for no mask.
ITEM_COLUMNS = ("input", "path", "out", "mask", "size", "mtime_ns")
NO_IMAGE = np.zeros((0, 0, 3), np.uint8)  # the image column of a row whose decode or denoise failed
NO_LABELS = np.zeros((0, 0), np.uint8)


class ClusterError(RuntimeError):
    """The Ray pipeline failed as a whole (not one file: the backend cannot be built on the workers, say)."""


@dataclass(frozen=True)
class ClusterConfig:
    """Where a Ray run goes: `address` of a running cluster (None: $RAY_ADDRESS, else a Ray instance on this machine),
    and how many denoising actors (None: one per GPU of the cluster, else one per two CPUs)."""

    address: str | None = None
    actors: int | None = None

    def __post_init__(self) -> None:
        if self.actors is not None and self.actors < 1:
            raise ValueError(f"actors must be >= 1, got {self.actors}")


def connect(address: str | None = None) -> None:
    """Join the Ray cluster at address (or start one here); a process already connected stays as it is."""
    try:
        import ray
    except ImportError as err:
        raise ImportError("--executor ray needs Ray Data: pip install 'fastdenoise[ray]' (or 'ray[data]')") from err
    if not ray.is_initialized():
        try:  # workers' output stays in Ray's session logs; a failure reaches the caller as one ClusterError line
            ray.init(address=address, logging_level="WARNING", log_to_driver=False)
        except ConnectionError as err:
            raise ValueError(f"cannot reach a Ray cluster at {address}: {err}") from err
    ray.data.DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.CRITICAL)


def item_columns(items: list[Item]) -> list[dict]:
    return [
        {
            "input": i.entry.rel,
            "path": str(i.entry.path),
            "out": str(i.out),
            "mask": str(i.mask or ""),
            "size": i.size,
            "mtime_ns": i.mtime_ns,
        }
        for i in items
    ]


def items_of(batch: dict[str, np.ndarray]) -> list[Item]:
    return [
        Item(Entry(Path(path), str(rel)), Path(out), int(size), int(mtime), Path(mask) if mask else None)
        for rel, path, out, mask, size, mtime in zip(*(batch[c] for c in ITEM_COLUMNS))
    ]


def decode(batch: dict[str, np.ndarray], loader: str, workers: int, max_pixels: int) -> dict[str, np.ndarray]:
    """CPU task: the run's loader on a batch of items -> the decoded images (or each file's error; files over
    max_pixels fail undecoded)."""
    items = items_of(batch)
    found = {d.item.entry.rel: d for d in make_loader(loader, workers, len(items), "cpu", max_pixels=max_pixels)(items)}
    done = [found[item.entry.rel] for item in items]
    return {c: batch[c] for c in ITEM_COLUMNS} | {
        "image": [NO_IMAGE if d.image is None else d.image for d in done],
        "error": np.array(["" if d.error is None else str(d.error) for d in done], dtype=object),
        "decode": np.array([d.seconds for d in done]),
    }


class Denoise:
    """Actor: the backend (and head) built once on this actor's device; batches of decoded images in, denoised
    images and predictions out, equal sizes batched together as the local runner does."""

    def __init__(self, model: Denoiser, backend: BackendConfig, cfg: RunConfig, predictor: Predictor | None) -> None:
        import ray

        device = "cuda" if ray.get_gpu_ids() else "cpu"
        self.backend = make_backend(model, replace(backend, device=device))
        self.predictor = None
        if predictor is not None:  # the driver's head, moved to this actor's device
            self.predictor = Predictor(predictor.head, predictor.task, predictor.top_k, predictor.name, device)
        self.cfg = cfg

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(batch["input"])
        images, errors = list(batch["image"]), list(batch["error"])
        groups: dict[object, list[int]] = {}
        for i in range(n):
            if not errors[i]:
                big = max(images[i].shape[:2]) > self.cfg.tile
                groups.setdefault(i if big else images[i].shape, []).append(i)  # a large image goes alone
        top, labels = [""] * n, [NO_LABELS] * n
        compute, head = np.zeros(n), np.zeros(n)
        for members in groups.values():
            stages = {"compute": 0.0, "head": 0.0}
            try:
                results, predictions, problems = denoise_group(
                    self.backend, self.predictor, [images[i] for i in members], self.cfg, stages
                )
            except GroupError as err:
                results, predictions = [NO_IMAGE] * len(members), [None] * len(members)
                problems = [str(err)] * len(members)
            for i, result, prediction, problem in zip(members, results, predictions, problems):
                images[i] = NO_IMAGE if problem else result
                errors[i] = problem or ""
                compute[i], head[i] = stages["compute"] / len(members), stages["head"] / len(members)
                if prediction is not None and prediction.top is not None:
                    top[i] = json.dumps(prediction.top, ensure_ascii=False)
                if prediction is not None and prediction.labels is not None:
                    labels[i] = prediction.labels
        return {c: batch[c] for c in (*ITEM_COLUMNS, "decode")} | {
            "image": images,
            "error": np.array(errors, dtype=object),
            "compute": compute,
            "head": head,
            "top": np.array(top, dtype=object),
            "labels": labels,
        }


def write(
    batch: dict[str, np.ndarray],
    dst: str,
    quality: int,
    head: str | None,
    palette: np.ndarray | None = None,
    made_by: dict | None = None,
    png_level: int = DEFAULT_PNG_LEVEL,
) -> dict[str, np.ndarray]:
    """CPU task: each item's output (and mask) written atomically under dst -> its manifest row as JSON text."""
    tree = OutputTree(Path(dst), quality, head, palette, made_by, png_level)
    rows, fatal, seconds = [], [], []
    for k, item in enumerate(items_of(batch)):
        tick = time.perf_counter()
        if batch["error"][k]:
            row, errno = tree.error_row(item, str(batch["error"][k])), None
        else:
            top, labels = batch["top"][k], batch["labels"][k]
            prediction = (
                None if head is None else Prediction(json.loads(top) if top else None, labels if labels.size else None)
            )
            row, errno = tree.save(item, np.asarray(batch["image"][k]), prediction)
        rows.append(json.dumps(row, ensure_ascii=False))
        fatal.append(errno or 0)
        seconds.append(time.perf_counter() - tick)
    return {"row": np.array(rows, dtype=object), "fatal": np.array(fatal), "write": np.array(seconds)} | {
        stage: batch[stage] for stage in ("decode", "compute", "head")
    }


def reason(err: Exception) -> str:
    """The root cause in one line: Ray's errors end with the line of the exception raised on the worker."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[-1] if lines else repr(err)


def actor_resources(device: str, actors: int | None) -> tuple[int, dict]:
    """How many denoising actors and what each holds: a GPU each where the cluster has GPUs (unless device is cpu)."""
    import ray

    total = ray.cluster_resources()
    gpus = int(total.get("GPU", 0)) if device != "cpu" else 0
    if gpus:
        return actors or gpus, {"num_gpus": 1}
    return actors or max(1, int(total.get("CPU", 1)) // 2), {"num_cpus": 1}


def denoise_on_cluster(
    src: Path,
    dst: Path,
    model: Denoiser,
    backend: BackendConfig,
    cfg: RunConfig,
    on_image: Callable[[dict], None] | None = None,
    *,
    stop: threading.Event | None = None,
    predictor: Predictor | None = None,
    cluster: ClusterConfig | None = None,
) -> RunSummary:
    """`denoise_folder` on a Ray cluster: same rows, outputs and resume. A Ray pipeline that fails as a whole (the
    backend cannot be built on the workers, say) raises ClusterError after the manifest holds what was done."""
    src, dst, cluster = Path(src), Path(dst), cluster or ClusterConfig()
    check_run(src, dst, cfg)
    connect(cluster.address)
    run = open_run(dst, backend, cfg, predictor, on_image, stop)  # the driver's lock, as rank 0 of a local run
    summary, stop = run.summary, run.stop
    suffix, segment = FORMATS[cfg.format], predictor is not None and predictor.task == "segment"
    start, failure, finished = time.perf_counter(), None, False  # finished stays False when an error ends the run
    try:
        items = []
        for entry in list_inputs(src, cfg.include, cfg.exclude):
            plan = triage(entry, run.tree, suffix, segment, run.vouchers, cfg.overwrite)
            if isinstance(plan, dict):
                run.record(plan)
            else:
                items.append(plan)
            if stop.is_set():
                break
        pending = {item.entry.rel for item in items}
        if pending and not stop.is_set():
            failure = run_pipeline(items, pending, dst, model, backend, cfg, predictor, cluster, run.record)
        if failure is None and pending and not stop.is_set():
            for item in items:  # every input gets its row, even one Ray lost without failing
                if item.entry.rel in pending:
                    run.error(item, "no result came back from the cluster; run again to redo it")
        finished = lists_everything(src, cfg.include, cfg.exclude)  # else the manifest's other rows are kept
    finally:
        finish(run, Shard(), finished, f"the Ray pipeline failed: {reason(failure)}" if failure is not None else None)
        summary.seconds = time.perf_counter() - start
    if failure is not None:
        raise ClusterError(f"the Ray pipeline failed: {reason(failure)}")
    if predictor is not None and predictor.task == "classify":
        summary.predictions = str(write_predictions(dst, predictor.key)[0])
    return summary


def run_pipeline(
    items: list[Item],
    pending: set[str],
    dst: Path,
    model: Denoiser,
    backend: BackendConfig,
    cfg: RunConfig,
    predictor: Predictor | None,
    cluster: ClusterConfig,
    record: Recorder,
) -> Exception | None:
    """Items -> decode -> denoise actors -> write, rows recorded as they come back (each input once); returns the
    exception that ended the pipeline, if one did. Ray Data's defaults retry: a task whose worker dies runs again, an
    actor that dies is restarted and its batch resent (outputs are atomic renames, so a rerun is harmless)."""
    import ray

    actors, resources = actor_resources(backend.device, cluster.actors)
    blocks = max(1, -(-len(items) // (8 * cfg.batch)))
    data = (
        ray.data.from_items(item_columns(items), override_num_blocks=blocks)
        .map_batches(decode, batch_size=cfg.batch, num_cpus=1, fn_args=(cfg.loader, cfg.workers, cfg.max_pixels))
        .map_batches(
            Denoise,
            batch_size=cfg.batch,
            compute=ray.data.ActorPoolStrategy(size=actors),
            fn_constructor_args=(model, backend, cfg, predictor),
            **resources,
        )
        .map_batches(
            write,
            batch_size=cfg.batch,
            num_cpus=1,
            fn_args=(
                str(dst),
                cfg.quality,
                predictor.key if predictor else None,
                predictor.palette if predictor else None,
                recipe_of(cfg),
                cfg.png_level,
            ),
        )
    )
    stages, stop = record.summary.stages, record.stop
    rows = data.iter_rows()
    try:
        for out in rows:
            row = json.loads(out["row"])
            if row["input"] not in pending:  # a batch Ray ran twice
                continue
            pending.discard(row["input"])
            for stage in ("decode", "compute", "head", "write"):
                stages[stage] += float(out[stage])
            if row["status"] == "ok":
                record.summary.megapixels += row["height"] * row["width"] / 1e6
            record(row)
            if out["fatal"]:
                record.halt(f"cannot write to {dst}: {os.strerror(int(out['fatal']))}", "output")
            if stop.is_set():
                break
    except Exception as err:  # noqa: BLE001 - Ray wraps whatever ended the pipeline; the caller reports it
        return err
    finally:
        getattr(rows, "close", lambda: None)()
    return None
