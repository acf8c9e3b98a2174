"""What a folder run did, as counts, rates and its first problems, and the lines that say it."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field, fields
from pathlib import Path

from fastdenoise.words import plural

PROBLEMS_KEPT = 10  # failed and ignored files named in the summary; the manifest has every one


@dataclass
class RunSummary:
    """What a folder run did: counts per status, megapixels and seconds per stage, why it stopped, its first
    problems."""

    ok: int = 0
    skipped: int = 0
    failed: int = 0
    ignored: int = 0
    megapixels: float = 0.0
    seconds: float = 0.0
    # decode and write are summed over their worker threads; idle is the compute thread waiting for input or writers
    stages: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    stopped: str | None = None  # why the run ended before every input was done (None: it finished)
    cause: str | None = None  # what stopped it: "request" (stop set from outside), "fail_fast", "output" (unwritable)
    masks: int = 0  # --task segment: done and skipped images with their mask
    predictions: str | None = None  # --task classify: predictions.csv, written by rank 0 after the merge
    taken_over: str | None = None  # the dead run whose output lock this run took over
    # (input, reason) of the first PROBLEMS_KEPT failed and the first PROBLEMS_KEPT ignored files (the manifest: all)
    problems: dict[str, list[tuple[str, str]]] = field(default_factory=lambda: {"error": [], "ignored": []})
    scores: dict[str, float] = field(default_factory=lambda: defaultdict(float))  # --ref: sums of psnr and ssim, and
    # `scored` images compared with their reference
    routes: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # routed runs: images per weights
    estimates: list[float] = field(default_factory=list)  # estimated images: lowest, highest estimate, sum, count

    def count(self, row: dict) -> None:
        """Count one manifest row in (called under the recorder's lock)."""
        status = row["status"]
        self.ok += status == "ok"
        self.skipped += status == "skipped"
        self.failed += status == "error"
        self.ignored += status == "ignored"
        self.masks += status in ("ok", "skipped") and row.get("mask") is not None
        if status in self.problems and len(self.problems[status]) < PROBLEMS_KEPT:
            self.problems[status].append((row["input"], row["error"]))
        if row.get("weights") is not None:
            self.routes[row["weights"]] += 1
        if row.get("sigma_est") is not None:
            low, high, total, count = self.estimates or (math.inf, -math.inf, 0.0, 0)
            self.estimates = [
                min(low, row["sigma_est"]),
                max(high, row["sigma_est"]),
                total + row["sigma_est"],
                count + 1,
            ]
        if row.get("psnr") is not None:
            self.scores["psnr"] += row["psnr"]
            self.scores["ssim"] += row["ssim"]
            self.scores["scored"] += 1

    @property
    def mp_per_s(self) -> float:
        return self.megapixels / self.seconds if self.seconds else 0.0

    @property
    def images_per_s(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0


def combined(parts: list[RunSummary]) -> RunSummary:
    """The job's summary from each rank's (torchrun): counts, megapixels, stage seconds, scores and routes added up,
    the slowest rank's seconds, the first problems, the first reason to stop."""
    job = RunSummary(seconds=max(p.seconds for p in parts))
    for part in parts:
        for name in ("ok", "skipped", "failed", "ignored", "megapixels", "masks"):
            setattr(job, name, getattr(job, name) + getattr(part, name))
        for name in ("stages", "scores", "routes"):
            for key, value in getattr(part, name).items():
                getattr(job, name)[key] += value
        for status, found in part.problems.items():
            job.problems[status] = (job.problems[status] + found)[:PROBLEMS_KEPT]
        if part.estimates:
            low, high, total, count = job.estimates or (math.inf, -math.inf, 0.0, 0)
            job.estimates = [
                min(low, part.estimates[0]),
                max(high, part.estimates[1]),
                total + part.estimates[2],
                count + part.estimates[3],
            ]
        if job.stopped is None:
            job.stopped, job.cause = part.stopped, part.cause
        job.taken_over, job.predictions = job.taken_over or part.taken_over, job.predictions or part.predictions
    return job


@dataclass
class Plan:
    """What a run would do (`--dry-run`), from the listing, the manifest and the image headers; nothing decoded."""

    todo: int = 0
    megapixels: float = 0.0
    done: int = 0  # vouched for by an earlier run: would be skipped
    failing: int = 0  # unreadable headers, files that cannot be stat'ed, images over --max-pixels
    ignored: int = 0
    problems: list[tuple[str, str]] = field(default_factory=list)  # (input, reason) of the first PROBLEMS_KEPT failing

    def fail(self, name: str, reason: str) -> None:
        self.failing += 1
        if len(self.problems) < PROBLEMS_KEPT:
            self.problems.append((name, reason))

    def lines(self) -> list[str]:
        """The counts, then each file that would fail and why (the first PROBLEMS_KEPT, then how many more)."""
        ignored = plural(self.ignored, "not an image", "not images")
        lines = [
            f"dry run: {plural(self.todo, 'image')} to denoise ({self.megapixels:.2f} MP), {self.done} done "
            f"earlier, {self.failing} would fail, {ignored}; nothing written"
        ]
        lines += [f"  would fail: {name}: {reason}" for name, reason in self.problems]
        if self.failing > len(self.problems):
            lines.append(f"  ... and {self.failing - len(self.problems)} more would fail")
        return lines


def summary_lines(summary: RunSummary, manifest: Path) -> list[str]:
    """The closing lines of a run: counts and rate (no rate when nothing was denoised), each failed and ignored file
    with its reason (the first PROBLEMS_KEPT, then how many more), and with --ref the mean PSNR/SSIM."""
    ignored = plural(summary.ignored, "not an image", "not images")
    counts = f"{summary.ok} denoised, {summary.skipped} skipped, {summary.failed} failed, {ignored}"
    if summary.megapixels:
        stages = ", ".join(f"{k} {v:.1f}s" for k, v in summary.stages.items())
        rate = f"{summary.megapixels:.2f} MP in {summary.seconds:.1f} s = {summary.mp_per_s:.3f} MP/s ({stages})"
    else:
        rate = f"nothing denoised in {summary.seconds:.1f} s"
    lines = [f"{counts}; {rate}; manifest: {manifest}"]
    named = [("failed", *p) for p in summary.problems["error"]] + [("ignored", *p) for p in summary.problems["ignored"]]
    lines += [f"  {what}: {name}: {reason}" for what, name, reason in named[:PROBLEMS_KEPT]]  # failures first
    more = summary.failed + summary.ignored - min(len(named), PROBLEMS_KEPT)
    if more > 0:
        lines.append(f"  ... and {more} more failed or ignored (see the manifest)")
    chosen = ", ".join(f"{name} {count}" for name, count in sorted(summary.routes.items()))
    if summary.estimates:
        low, high, total, count = summary.estimates
        estimated = f"{low:.1f}-{high:.1f} (mean {total / count:.1f}, {plural(int(count), 'image')})"
        lines.append(f"noise level estimated {estimated}; images per weights: {chosen}")
    elif summary.routes:
        lines.append(f"images per weights: {chosen}")
    scored = int(summary.scores["scored"])
    if scored:
        psnr, ssim = summary.scores["psnr"] / scored, summary.scores["ssim"] / scored
        missing = f"; {summary.ok - scored} without a reference" if summary.ok > scored else ""
        lines.append(f"reference: mean PSNR {psnr:.2f} dB, SSIM {ssim:.4f} over {plural(scored, 'image')}{missing}")
    return lines


def summary_dict(summary: RunSummary) -> dict:
    values = {f.name: getattr(summary, f.name) for f in fields(summary)}  # asdict cannot copy the defaultdict
    return values | {"mp_per_s": summary.mp_per_s, "images_per_s": summary.images_per_s, "stages": dict(summary.stages)}
