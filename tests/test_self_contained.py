"""The repository is self-contained: code and docs refer only to files that are in it.

Scans the library, the tools, the configs, the top-level scripts and the Markdown pages for
Markdown file names (``docs/inference.md``, ``original_release.md#padding``) and relative
Markdown links, and checks that each target exists and, for ``#anchors``, that the page has such
a heading: a page that is not in the repository cannot be cited. What users need to know about
the original release is in ``docs/original_release.md``; the released checkpoints' key lists the
tests compare with are in ``tests/fixtures/checkpoint_keys``.
"""

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Folders beside the checkout that only the real-data tests may read (through $DIFFMATTE_SHARED):
# nothing may point into any other part of them.
OUTSIDE_FOLDER = re.compile(r"(?:\.\./|(?<![\w./]))shared/(?!data\b|fixtures/metrics\b)[\w-]+")
# A Markdown file name in running text: optional folders, a name, ".md", an optional #anchor.
MD_NAME = re.compile(r"(?<![\w./-])((?:[\w.-]+/)*[\w.-]+\.md)(#[\w-]+)?")
# A Markdown link or image target: [text](target) or ![alt](target).
MD_LINK = re.compile(r"\]\(([^)\s]+)\)")


def _scanned_files() -> list[Path]:
    files = [REPO / "README.md", *sorted(REPO.glob("*.py"))]
    for folder, pattern in (
        ("diffmatte", "**/*.py"),
        ("diffmatte", "**/*.md"),
        ("tools", "*.py"),
        ("configs", "**/*.py"),
        ("docs", "**/*.md"),
    ):
        files.extend(sorted((REPO / folder).glob(pattern)))
    return [path for path in files if path.is_file()]


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    anchors = set()
    in_code = False
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return anchors


def _resolve(reference: str, source: Path) -> Path | None:
    """The repository file a reference names, looked up beside the source, then from the root."""
    for base in (source.parent, REPO, REPO / "docs"):
        candidate = (base / reference).resolve()
        if candidate.is_file() and candidate.is_relative_to(REPO):
            return candidate
    if "/" not in reference:  # a bare name: any file of that name in the repository
        matches = [p for p in REPO.rglob(reference) if ".git" not in p.parts]
        return matches[0] if matches else None
    return None


def _references(path: Path) -> list[tuple[int, str, str]]:
    """(line number, file part, anchor or "") of every Markdown reference in a file."""
    found = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        for match in MD_NAME.finditer(line):
            found.append((number, match.group(1), (match.group(2) or "")[1:]))
        if path.suffix == ".md":
            for match in MD_LINK.finditer(line):
                target = match.group(1)
                if re.match(r"[a-z]+:", target) or target.startswith("#"):
                    continue  # web address or an anchor of the same page
                file_part, _, anchor = target.partition("#")
                if not file_part.endswith(".md"):  # other files: checked without anchors
                    found.append((number, file_part, ""))
    return found


def test_no_reference_into_folders_outside_the_repository():
    offenders = [
        f"{path.relative_to(REPO)}:{number}"
        for path in [*_scanned_files(), *sorted((REPO / "tests").rglob("*.py"))]
        if path != Path(__file__).resolve()
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if OUTSIDE_FOLDER.search(line)
    ]
    assert offenders == []
    assert OUTSIDE_FOLDER.search("read from ../shared/notes/x")
    assert not OUTSIDE_FOLDER.search("../shared/data/matting and shared/fixtures/metrics")
    assert not OUTSIDE_FOLDER.search("train.output_dir=/shared/runs/vits")


def test_referenced_files_and_anchors_exist():
    problems = []
    for path in _scanned_files():
        for number, reference, anchor in _references(path):
            where = f"{path.relative_to(REPO)}:{number}: {reference}"
            target = _resolve(reference, path)
            if target is None:
                problems.append(f"{where}: no such file in the repository")
            elif anchor and anchor not in _anchors(target):
                problems.append(f"{where}#{anchor}: no such heading")
    assert problems == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("see docs/original_release.md#padding.", [("docs/original_release.md", "padding")]),
        (
            "[inference](docs/inference.md) and `SOURCES.md`",
            [("docs/inference.md", ""), ("SOURCES.md", "")],
        ),
        ("a path like ../shared/data or configs/ViTS.py", []),
    ],
)
def test_reference_pattern(tmp_path, text, expected):
    page = tmp_path / "page.py"
    page.write_text(text + "\n", encoding="utf-8")
    assert [(ref, anchor) for _, ref, anchor in _references(page)] == expected


def test_checks_catch_a_missing_page_and_heading():
    page = REPO / "docs" / "original_release.md"
    assert {"padding", "known-foreground", "training-recipe"} <= _anchors(page)
    assert _resolve("docs/original_release.md", REPO / "diffmatte" / "x.py") == page
    assert _resolve("docs/no_such_page.md", REPO / "diffmatte" / "x.py") is None
    assert "no-such-heading" not in _anchors(page)
