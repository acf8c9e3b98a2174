import io
import math
import random

from fastdenoise.progress import PlainProgress, ProgressStats, clock_time, progress_bar


def field_text(markup: bool, value: str) -> str:
    bar = progress_bar("denoise", markup=markup, enabled=False)
    bar.add_task("run", total=3, last=value)
    task = bar.tasks[-1]
    return bar.columns[3].render(task).plain


def test_file_names_keep_their_brackets_without_markup():
    name = "holiday [seed, i] [bold].png"
    assert field_text(False, name) == name
    assert field_text(True, name) != name  # rich markup would eat them: why `run` turns it off


def test_training_eta_moves_smoothly_after_one_slow_window():
    stats = ProgressStats(total=1000, step=100)
    for _ in range(5):
        stats.timed(2.0, 0.1)
    before = stats.eta()
    stats.timed(0.2, 0.01)  # one window slowed tenfold (a validation pass)
    assert before is not None and stats.eta() is not None
    assert before < stats.eta() < 2.5 * before < 900 / 0.2


def test_plain_lines_every_interval_with_done_share_elapsed_left_and_the_last_name(capsys):
    rng = random.Random(28)
    total, step = rng.randint(200, 900), rng.choice([0.25, 0.5, 2.0])
    now = [0.0]
    with PlainProgress("denoise", "last", True, 30.0, clock=lambda: now[0]) as bar:
        task = bar.add_task("run", total=total, last="")
        for i in range(total):
            now[0] += step
            bar.update(task, advance=1, last=f"photo {i} [x].png")
    lines = capsys.readouterr().err.splitlines()
    per_line = math.ceil(30.0 / step)  # images between two lines
    assert len(lines) == total // per_line
    done = per_line
    elapsed, left = round(done * step), round((total - done) * step)
    assert lines[0] == (
        f"denoise: {done}/{total} ({done / total:.0%}), {clock_time(elapsed)} elapsed, "
        f"{clock_time(left)} left; photo {done - 1} [x].png"
    )


def test_plain_lines_without_a_total_or_the_remaining_time(capsys):
    now = [100.0]
    bar = PlainProgress("train", "stats", remaining=False, every=30.0, clock=lambda: now[0])
    task = bar.add_task("train", total=None, completed=7, stats="")
    now[0] += 29.0
    bar.update(task, completed=9, stats="loss 1.00e-02")
    assert capsys.readouterr().err == ""  # under 30 s: nothing yet
    now[0] += 1.0
    bar.update(task, completed=11, stats="loss 9.00e-03")
    assert capsys.readouterr().err == "train: 11, 0:00:30 elapsed; loss 9.00e-03\n"


def test_a_terminal_gets_the_rich_bar_anything_else_the_plain_lines(monkeypatch):
    import rich
    from rich.console import Console

    monkeypatch.setattr(rich, "get_console", lambda: Console(file=io.StringIO(), force_terminal=True))
    assert not isinstance(progress_bar("denoise"), PlainProgress)
    monkeypatch.setattr(rich, "get_console", lambda: Console(file=io.StringIO(), force_terminal=False))
    assert isinstance(progress_bar("denoise"), PlainProgress)
    assert not isinstance(progress_bar("denoise", enabled=False), PlainProgress)  # rank > 0: a silent rich bar


def test_a_bar_that_stays_ends_with_its_last_state(capsys):
    steps = random.Random(28).randint(2, 99)
    now = [0.0]
    with PlainProgress("train", "stats", False, 30.0, final=True, clock=lambda: now[0]) as bar:
        task = bar.add_task("train", total=steps, completed=0, stats="")
        for step in range(1, steps + 1):
            now[0] += 0.1
            bar.update(task, completed=step, stats=f"loss {1 / step:.2e}")
    last = f"train: {steps}/{steps} (100%), {clock_time(steps * 0.1)} elapsed; loss {1 / steps:.2e}\n"
    assert capsys.readouterr().err == last  # nothing before: under 30 s


def test_a_bar_left_by_an_error_prints_no_last_state(capsys):
    bar = PlainProgress("train", "stats", False, 30.0, final=True, clock=lambda: 0.0)
    try:
        with bar:
            bar.add_task("train", total=random.Random(28).randint(2, 99), completed=1, stats="loss 1.00e-02")
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        pass
    assert capsys.readouterr().err == ""  # the stop's own line says where the run stands
