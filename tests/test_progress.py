from fastdenoise.progress import ProgressStats, progress_bar


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
