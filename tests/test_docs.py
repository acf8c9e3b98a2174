"""The README's commands run from a fresh clone: they name the user's own folders, and docs/data.md says where each
data set the measurements used comes from."""

import re

import pytest
from conftest import ROOT, shared_data

DATA_SETS = (
    "kodak24/",
    "cbsd68/",
    "cbsd432/",
    "imagenet-samples/",
    "camvid/",
    "weights/espnetv2/",
    "weights/dncnn/",
    "weights/ffdnet/",
)


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


README_MAX_CHARS = 10_000  # the README is the front door; the rest lives in docs/ (issue 28)
FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.MULTILINE | re.DOTALL)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def pages() -> list:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def prose(text: str) -> str:
    """The Markdown without fenced code blocks and code spans, where `[x](y)` and `# x` are not links or headings."""
    return re.sub(r"`[^`\n]*`", "", FENCE.sub("", text))


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: its text without links' targets, lowercased, punctuation but '-' and '_' removed,
    spaces turned to '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path) -> set[str]:
    """Every heading's anchor in a Markdown file; a repeated one gets GitHub's -1, -2, ... suffix."""
    found: set[str] = set()
    for line in FENCE.sub("", path.read_text()).splitlines():
        heading = re.match(r"#{1,6} (.+?)#*$", line)
        if heading:
            base = anchor(heading[1])
            name, count = base, 0
            while name in found:
                count += 1
                name = f"{base}-{count}"
            found.add(name)
    return found


def test_the_readme_is_a_front_door():
    assert len((ROOT / "README.md").read_text()) <= README_MAX_CHARS


def test_the_anchor_rule_is_githubs():
    assert anchor("Stage 2 (`campaign/blind-p48/`): 48 px patches, then a lower LR") == (
        "stage-2-campaignblind-p48-48-px-patches-then-a-lower-lr"
    )
    assert anchor("The user's path (issue 26, session 8)") == "the-users-path-issue-26-session-8"


def test_every_relative_link_in_the_readme_and_docs_points_to_a_file_and_heading():
    broken = []
    for page in pages():
        for target in LINK.findall(prose(page.read_text())):
            if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
                continue
            path, _, fragment = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            if not file.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif fragment and file.suffix == ".md" and fragment not in anchors(file):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)
