import json
import os

from fastdenoise.pipeline.manifest import MANIFEST, Journal, load_vouchers, merge, part_name


def row(name: str, status: str = "ok", **facts) -> dict:
    base = {"input": name, "status": status, "output": name, "error": None}
    if status == "ok":
        base |= {
            "height": 2,
            "width": 3,
            "input_size": 10,
            "input_mtime_ns": 1,
            "output_size": 20,
            "output_mtime_ns": 2,
        }
    return base | facts


def test_a_line_cut_by_a_kill_is_passed_over(tmp_path):
    journal = Journal(tmp_path)
    journal.write(row("a.png"))
    journal.write(row("b.png"))
    journal.close()
    with (tmp_path / part_name(0)).open("a") as handle:
        handle.write('{"input": "c.png", "stat')  # the kill came mid-line
    assert set(load_vouchers(tmp_path)) == {"a.png", "b.png"}


def test_latest_row_wins_and_errors_withdraw_a_voucher(tmp_path):
    (tmp_path / MANIFEST).write_text("\n".join(json.dumps(r) for r in [row("a.png"), row("b.png")]) + "\n")
    journal = Journal(tmp_path)
    journal.write(row("a.png", "error", error="cannot write output: disk full"))
    journal.close()
    assert set(load_vouchers(tmp_path)) == {"b.png"}


def test_complete_merge_keeps_this_runs_rows_only_and_removes_parts(tmp_path):
    (tmp_path / MANIFEST).write_text(json.dumps(row("gone.png")) + "\n")
    for rank, names in enumerate([["a.png", "c.png"], ["b.png"]]):
        journal = Journal(tmp_path, rank)
        for name in names:
            journal.write(row(name))
        journal.close()
    counts = merge(tmp_path, world=2, complete=True)
    rows = [json.loads(line) for line in (tmp_path / MANIFEST).read_text().splitlines()]
    assert [r["input"] for r in rows] == ["a.png", "c.png", "b.png"] and counts == {"ok": 3}
    assert not list(tmp_path.glob("manifest.part*")) and not list(tmp_path.glob(".*"))


def test_stopped_merge_keeps_earlier_rows_for_inputs_not_reached(tmp_path):
    (tmp_path / MANIFEST).write_text(json.dumps(row("a.png")) + "\n" + json.dumps(row("b.png")) + "\n")
    journal = Journal(tmp_path)
    journal.write(row("b.png", "skipped"))
    journal.write(row("c.png"))
    journal.close()
    os.utime(tmp_path / part_name(0))
    merge(tmp_path, complete=False)
    rows = {
        json.loads(line)["input"]: json.loads(line)["status"] for line in (tmp_path / MANIFEST).read_text().splitlines()
    }
    assert rows == {"a.png": "ok", "b.png": "skipped", "c.png": "ok"}
