"""The run manifest: one JSON row per input in OUTPUT/manifest.jsonl. While a run goes, each process appends its rows
to its own part (`manifest.part<rank>.jsonl`, each row one whole write, so a kill loses nothing written and a full disk
leaves no half row); at the end the parts are merged into manifest.jsonl. A run started again reads the manifest and
any parts left by a killed run and skips every input whose row still vouches for its output (same input size and
mtime, same output size and mtime)."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from fastdenoise.files import atomic_write, open_own

MANIFEST = "manifest.jsonl"
PART_GLOB = "manifest.part*.jsonl"


def part_name(rank: int) -> str:
    return f"manifest.part{rank}.jsonl"


def row_line(row: dict) -> str:
    """A row as one JSON line. Names that are not UTF-8 (kept by Python as surrogate escapes) are written as \\udcXX
    escapes, which JSON allows and `json.loads` turns back into the same name."""
    line = json.dumps(row, ensure_ascii=False)
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        line = json.dumps(row)
    return line + "\n"


@dataclass(frozen=True, slots=True)
class Voucher:
    """What an `ok` row says about its output (and, after `run --task`, its prediction), enough to trust it on a later
    run without decoding anything."""

    output: str
    input_size: int
    input_mtime_ns: int
    output_size: int
    output_mtime_ns: int
    height: int
    width: int
    head: str | None = None  # `run --task`: which head (and top-k) made the prediction
    top: str | None = None  # classify: the row's top-k list as JSON text (a tenth of the memory of nested lists)
    mask: str | None = None  # segment: the mask file, relative to OUTPUT, and its size and mtime
    mask_size: int | None = None
    mask_mtime_ns: int | None = None
    made_by: str | None = None  # what made the output (weights digest, pixel-changing settings) as canonical JSON
    kept: str | None = None  # the row's other fields (`sigma_est`, `weights`, ...) as JSON, kept by a skipped row

    @classmethod
    def from_row(cls, row: dict) -> Voucher | None:
        try:
            top = json.dumps(row["top"], ensure_ascii=False) if row.get("top") is not None else None
            kept = {k: v for k, v in row.items() if k not in NOT_KEPT}
            return cls(
                row["output"],
                row["input_size"],
                row["input_mtime_ns"],
                row["output_size"],
                row["output_mtime_ns"],
                row["height"],
                row["width"],
                row.get("head"),
                top,
                row.get("mask"),
                row.get("mask_size"),
                row.get("mask_mtime_ns"),
                recipe_text(row.get("made_by")),
                json.dumps(kept, ensure_ascii=False) if kept else None,
            )
        except (KeyError, TypeError, ValueError):
            return None

    def holds(
        self, dst: Path, output: str, input_stat: os.stat_result, head: str | None = None, made_by: str | None = None
    ) -> bool:
        """True if the input is unchanged and the output (and mask, if the row has one) is the very file the row was
        written for, made as `made_by` says (a row without that record vouches for nothing); with `head`, only if the
        row also holds that head's prediction."""
        if output != self.output or (input_stat.st_size, input_stat.st_mtime_ns) != (
            self.input_size,
            self.input_mtime_ns,
        ):
            return False
        if (head is not None and head != self.head) or made_by != self.made_by:
            return False
        files = [(output, self.output_size, self.output_mtime_ns)]
        if self.mask is not None:
            files.append((self.mask, self.mask_size, self.mask_mtime_ns))
        for name, size, mtime_ns in files:
            try:
                st = (dst / name).stat()
            except OSError:
                return False
            if (st.st_size, st.st_mtime_ns) != (size, mtime_ns):
                return False
        return True

    def fields(self) -> dict:
        facts = {
            "height": self.height,
            "width": self.width,
            "input_size": self.input_size,
            "input_mtime_ns": self.input_mtime_ns,
            "output_size": self.output_size,
            "output_mtime_ns": self.output_mtime_ns,
        }
        if self.head is not None:
            facts["head"] = self.head
        if self.top is not None:
            facts["top"] = json.loads(self.top)
        if self.mask is not None:
            facts |= {"mask": self.mask, "mask_size": self.mask_size, "mask_mtime_ns": self.mask_mtime_ns}
        if self.made_by is not None:
            facts["made_by"] = json.loads(self.made_by)
        return facts | (json.loads(self.kept) if self.kept else {})


# Fields a Voucher holds itself, and the --ref scores (which belong to the --ref folder of the run that wrote them).
NOT_KEPT = frozenset(
    {
        "input",
        "status",
        "output",
        "error",
        "height",
        "width",
        "input_size",
        "input_mtime_ns",
        "output_size",
        "output_mtime_ns",
        "head",
        "top",
        "mask",
        "mask_size",
        "mask_mtime_ns",
        "made_by",
        "psnr",
        "ssim",
        "ref_error",
    }
)


def recipe_text(made_by: dict | None) -> str | None:
    """A `made_by` record as canonical JSON (interned: every row of a run shares one string)."""
    return None if made_by is None else sys.intern(json.dumps(made_by, sort_keys=True, ensure_ascii=False))


def read_lines(path: Path) -> Iterator[tuple[int, dict]]:
    """(byte offset, row) for every JSON object line; a line cut short by a kill or garbled is passed over."""
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        return
    with handle:
        offset = 0
        for line in handle:
            start, offset = offset, offset + len(line)
            try:
                row = json.loads(line)
            except (UnicodeDecodeError, json.JSONDecodeError):
                continue
            if isinstance(row, dict):
                yield start, row


@dataclass(frozen=True)
class Segment:
    """The rows one process appended to its part in one run: [start, end) bytes, after a header line."""

    path: Path
    started_ns: int
    start: int
    end: int


def segments(dst: Path) -> list[Segment]:
    """Every run segment of every part file in dst, oldest first."""
    found = []
    for path in sorted(Path(dst).glob(PART_GLOB)):
        if path.is_symlink():  # planted: never ours (parts are opened with O_NOFOLLOW), not read
            continue
        heads = [(offset, row["run_started_ns"]) for offset, row in read_lines(path) if "run_started_ns" in row]
        size = path.stat().st_size
        for k, (offset, started) in enumerate(heads):
            found.append(Segment(path, started, offset, heads[k + 1][0] if k + 1 < len(heads) else size))
    return sorted(found, key=lambda s: s.started_ns)


def segment_rows(segment: Segment) -> Iterator[dict]:
    with segment.path.open("rb") as handle:
        handle.seek(segment.start)
        for line in handle.read(segment.end - segment.start).splitlines():
            try:
                row = json.loads(line)
            except (UnicodeDecodeError, json.JSONDecodeError):
                continue
            if isinstance(row, dict) and "input" in row:
                yield row


def history(dst: Path) -> Iterator[dict]:
    """Every row known about earlier runs into dst, oldest first: manifest.jsonl, then parts left by killed runs."""
    for _, row in read_lines(Path(dst) / MANIFEST):
        if "input" in row:
            yield row
    for segment in segments(dst):
        yield from segment_rows(segment)


def load_vouchers(dst: Path) -> dict[str, Voucher]:
    """input -> voucher of its latest row, for inputs whose latest row is `ok` or `skipped` with output facts."""
    vouchers: dict[str, Voucher] = {}
    for row in history(dst):
        voucher = Voucher.from_row(row) if row.get("status") in ("ok", "skipped") else None
        if voucher:
            vouchers[row["input"]] = voucher
        else:
            vouchers.pop(row["input"], None)
    return vouchers


class Journal:
    """This process's manifest part: a header line per run, then one row per input, appended.

    Each line goes to the kernel in one write (no buffer holds part of a row): a kill loses nothing written; a write
    that fails (disk full) is cut back to the last whole line. A tail torn by an older version or a crash of the
    machine is cut off when the part is opened again, so the next header starts a line of its own. Rows are not
    fsynced one by one (a row per image would cost a disk flush per image); the part is on close, and the merged
    manifest before its rename. After a power cut the outputs of rows lost are redone."""

    def __init__(self, dst: Path, rank: int = 0) -> None:
        self.path = Path(dst) / part_name(rank)
        self.lock = threading.Lock()
        self.fd: int | None = open_own(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT)
        try:
            self.size = repair_tail(self.fd)
            self.append(row_line({"run_started_ns": time.time_ns(), "rank": rank}).encode("utf-8"))
        except BaseException:
            os.close(self.fd)
            raise

    def append(self, data: bytes) -> None:
        start, done = self.size, 0
        try:
            while done < len(data):
                done += write_some(self.fd, data[done:])
        except BaseException:
            os.ftruncate(self.fd, start)  # frees space, so this works on a full disk too
            raise
        self.size = start + len(data)

    def write(self, row: dict) -> None:
        data = row_line(row).encode("utf-8")
        with self.lock:
            self.append(data)

    def close(self) -> None:
        with self.lock:
            if self.fd is not None:
                fd, self.fd = self.fd, None
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)


def write_some(fd: int, data: bytes) -> int:
    """os.write (a name of its own so tests can make the disk fill up mid-row)."""
    return os.write(fd, data)


def repair_tail(fd: int, block: int = 1 << 16) -> int:
    """Cut a file back to the end of its last whole line (a row cut short); returns its size afterwards."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return size
    end = size
    while end > 0:
        start = max(0, end - block)
        newline = os.pread(fd, end - start, start).rfind(b"\n")
        if newline >= 0:
            end = start + newline + 1
            break
        end = start
    os.ftruncate(fd, end)
    return end


def merge(dst: Path, world: int = 1, complete: bool = True) -> dict[str, int]:
    """Fold the parts into manifest.jsonl and delete them; returns rows per status.

    complete: this run listed every input, so manifest.jsonl becomes exactly this run's rows (the last segment of
    parts 0..world-1; streamed, one row per input). Otherwise (stopped early) rows of earlier runs for inputs this run
    did not reach are kept too: latest row per input wins."""
    dst = Path(dst)
    parts = segments(dst)
    counts: dict[str, int] = {}

    def count(rows: Iterator[dict]) -> Iterator[str]:
        for row in rows:
            counts[row.get("status", "?")] = counts.get(row.get("status", "?"), 0) + 1
            yield row_line(row)

    if complete:
        last = {s.path.name: s for s in parts}  # oldest first, so the last segment of each part wins
        current = [last[part_name(r)] for r in range(world) if part_name(r) in last]
        rows: Iterator[dict] = (row for s in current for row in segment_rows(s))
    else:
        latest: dict[str, str] = {}
        for row in history(dst):
            latest[row["input"]] = row_line(row)
        rows = (json.loads(line) for line in latest.values())
    atomic_write(dst / MANIFEST, lambda handle: handle.writelines(count(rows)), "w", unique=False, encoding="utf-8")
    for segment in parts:
        segment.path.unlink(missing_ok=True)
    return counts
