"""The README's commands run from a fresh clone: they name the user's own folders, and docs/data.md says where each
data set the measurements used comes from."""

import re

import pytest
from conftest import ROOT, shared_data

DATA_SETS = ("kodak24/", "cbsd68/", "cbsd432/", "imagenet-samples/", "camvid/", "weights/espnetv2/", "weights/dncnn/",
             "weights/ffdnet/")  # fmt: skip


def source_rows(text: str) -> dict[str, str]:
    """`folder/` -> `owner/repo@commit...` of each row of a Markdown table that names a source repository."""
    rows = {}
    for line in text.splitlines():
        found = re.match(r"\| `([^`]+/)` \|.*\| ([\w.-]+/[\w.-]+@[0-9a-f]{7}[^ |]*) \|", line)
        if found:
            rows[found[1]] = found[2]
    return rows


def test_the_readme_uses_no_folder_beside_the_checkout():
    readme = (ROOT / "README.md").read_text()
    assert "../shared/data" not in readme  # exists only beside this repository, not in a fresh clone
    assert "[docs/data.md](docs/data.md)" in readme


def test_docs_data_names_the_source_of_every_data_set():
    assert sorted(source_rows((ROOT / "docs" / "data.md").read_text())) == sorted(DATA_SETS)


def test_docs_data_cites_the_sources_the_data_folder_was_gathered_from():
    readme = shared_data() / "README.md"
    if not readme.is_file():
        pytest.skip(f"no data folder README at {readme} (set FASTDENOISE_DATA)")
    assert source_rows((ROOT / "docs" / "data.md").read_text()) == source_rows(readme.read_text())
