"""The paper's tables, by concern: `arms` (what runs), `samples` (one image at a time, noised and scored), `cells`
(rows reduced to cells, intervals, paired tests), `paper` (Tables 1-3), `output` (Markdown, JSON, plot). The names
the command line uses are here."""

from fastdenoise.evaluation.tables.arms import NOISY, PEERS, Arm, Split, model_arm, parse_named, peer_arm, task_arms
from fastdenoise.evaluation.tables.output import markdown, progress_bar, write_table
from fastdenoise.evaluation.tables.paper import Table1Config, Table2Config, Table3Config, table1, table2, table3
from fastdenoise.evaluation.tables.samples import write_split_labels
from fastdenoise.models.heads.espnetv2 import find_segmenter_weights

__all__ = [
    "NOISY",
    "PEERS",
    "Arm",
    "Split",
    "Table1Config",
    "Table2Config",
    "Table3Config",
    "find_segmenter_weights",
    "markdown",
    "model_arm",
    "parse_named",
    "peer_arm",
    "progress_bar",
    "table1",
    "table2",
    "table3",
    "task_arms",
    "write_split_labels",
    "write_table",
]
