"""Every ```python block of README.md and docs/*.md runs as written.

Each block runs in a fresh namespace with a temporary working directory. An HTML comment right
before a block says what it needs:

- ``<!-- snippet: needs-checkpoint -->``: ``configs/<name>.py`` is replaced by the tiny test
  config, ``checkpoints/<name>.pth`` is a tiny checkpoint, and every image the block reads
  (``read_*("file.png")``) is a small random image (a 0/128/255 trimap when the name says so);
- ``<!-- snippet: needs-onnx-export -->``: every ``exported/<name>`` folder the block names holds
  the ONNX export of a tiny random-weight model, and images it reads are made as above;
- ``<!-- snippet: needs-dim-data -->``: the Adobe DIM and COCO folders the block names exist,
  filled with synthetic foregrounds and the bundled backgrounds;
- ``<!-- snippet: config configs/<file>.py -->``: the block is a config file; it is written at
  that path inside a copy of ``configs/`` and loaded with ``LazyConfig.load``;
- ``<!-- snippet: skip <reason> -->``: not run; only the blocks listed in ``EXPECTED_SKIPS``.

Every Composition-1k-style folder a block names (``"data/...testset"``) is made with two small
images, their trimaps and alphas.

A marker ending in ``slow`` runs the block only with ``-m slow``. Unmarked blocks run as pasted at
the repository root: ``configs/`` is visible in the working directory, everything else written
there is temporary.
"""

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from diffmatte.config import LazyConfig
from diffmatte.engine.checkpoint import save_model_weights

REPO_ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted((REPO_ROOT / "docs").glob("*.md")) + [REPO_ROOT / "README.md"]
BLOCK = re.compile(
    r"(?:<!--\s*snippet:\s*(?P<marker>[^>]*?)\s*-->[ \t]*\n[ \t]*)?"
    r"```python\n(?P<code>.*?)^[ \t]*```",
    re.S | re.M,
)
# Blocks that are not programs: (file, first code line) -> why.
EXPECTED_SKIPS = {
    ("docs/inference.md", "torch.randn(1, 1, H, W, generator=torch.Generator().manual_seed(seed))"),
    (
        "docs/deploy.md",
        'times = [1 - k / steps for k in range(steps + 1)]      # float32, see "noise rule"',
    ),
}

pytestmark = pytest.mark.usefixtures("one_thread")


@dataclass(frozen=True)
class Snippet:
    path: Path
    line: int
    marker: str
    code: str

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(REPO_ROOT)}:{self.line}"


def _snippets() -> list[Snippet]:
    found = []
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        for match in BLOCK.finditer(text):
            line = text.count("\n", 0, match.start("code")) + 1
            found.append(Snippet(path, line, match.group("marker") or "", match.group("code")))
    return found


SNIPPETS = _snippets()
PARAMS = [
    pytest.param(s, id=s.name, marks=[pytest.mark.slow] if s.marker.endswith(" slow") else [])
    for s in SNIPPETS
]


def test_snippets_are_found():
    names = {snippet.path.name for snippet in SNIPPETS}
    assert {"README.md", "data.md", "config.md", "evaluation.md"} <= names


def test_skips_are_the_listed_exceptions():
    skipped = {
        (str(s.path.relative_to(REPO_ROOT)), s.code.strip().splitlines()[0])
        for s in SNIPPETS
        if s.marker.startswith("skip")
    }
    assert skipped == EXPECTED_SKIPS


def _write_inputs(code: str, root: Path) -> None:
    rng = np.random.default_rng(0)
    for name in re.findall(r"(?:read_\w+|imread)\(\s*[\"']([^\"']+\.(?:png|jpg))[\"']", code):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if "trimap" in Path(name).stem:
            image = np.full((40, 48), 128, np.uint8)
            image[:8], image[-8:] = 0, 255
        else:
            image = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
        assert cv2.imwrite(str(path), image)


def _write_testsets(code: str, root: Path) -> None:
    rng = np.random.default_rng(1)
    for folder in set(re.findall(r"[\"'](data/[\w./-]*testset)[\"']", code)):
        for name in ("a", "b"):
            for sub, image in (
                ("merged", rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)),
                ("trimaps", np.repeat(np.array([0, 128, 255], np.uint8), 16)[None].repeat(40, 0)),
                ("alpha_copy", rng.integers(0, 256, (40, 48), dtype=np.uint8)),
            ):
                (root / folder / sub).mkdir(parents=True, exist_ok=True)
                assert cv2.imwrite(str(root / folder / sub / f"{name}.png"), image)


def _prepare_checkpoint(code: str, root: Path, tiny_config: Path, build_tiny_model) -> str:
    model = build_tiny_model(0)
    for name in set(re.findall(r"checkpoints/(\w+)\.pth", code)):
        save_model_weights(model, root / "checkpoints" / f"{name}.pth")
    _write_inputs(code, root)
    return re.sub(r"configs/\w+\.py", tiny_config.as_posix(), code)


def _prepare_onnx_export(code: str, root: Path, build_tiny_model) -> None:
    pytest.importorskip("onnxruntime")
    from diffmatte.deploy.export import export_model

    model = build_tiny_model(0)
    for folder in set(re.findall(r"[\"'](exported/[\w.-]+)[\"']", code)):
        with torch.no_grad():
            export_model(model, root / folder, "tiny_vit")
    _write_inputs(code, root)


def _prepare_dim_data(code: str, root: Path) -> None:
    from diffmatte.data.sources import bundled_backgrounds
    from diffmatte.data.synthetic import write_foregrounds

    for index, folder in enumerate(re.findall(r"\"(data/Combined_Dataset/[^\"]+)\"", code)):
        write_foregrounds(root / folder, num=2, size=160, seed=index)
    for folder in re.findall(r"backgrounds=\"([^\"]+)\"", code):
        (root / folder).mkdir(parents=True)
        for background in bundled_backgrounds():
            shutil.copy(background, root / folder)


@pytest.mark.parametrize("snippet", PARAMS)
def test_snippet_runs(snippet, tmp_path, monkeypatch, tiny_config, build_tiny_model):
    kind, _, argument = snippet.marker.removesuffix(" slow").removesuffix("slow").partition(" ")
    if kind == "skip":
        pytest.skip(f"{snippet.name}: {argument}")
    monkeypatch.chdir(tmp_path)
    if kind != "config":
        (tmp_path / "configs").symlink_to(REPO_ROOT / "configs", target_is_directory=True)
    code = snippet.code
    if kind == "config":
        shutil.copytree(REPO_ROOT / "configs", tmp_path / "configs")
        (tmp_path / argument).write_text(code, encoding="utf-8")
        cfg = LazyConfig.load(str(tmp_path / argument))
        assert {"model", "train"} <= set(cfg.keys())
        return
    _write_testsets(code, tmp_path)
    if kind == "needs-checkpoint":
        code = _prepare_checkpoint(code, tmp_path, tiny_config, build_tiny_model)
    elif kind == "needs-onnx-export":
        _prepare_onnx_export(code, tmp_path, build_tiny_model)
    elif kind == "needs-dim-data":
        _prepare_dim_data(code, tmp_path)
    else:
        assert kind == "", f"{snippet.name}: unknown snippet marker {snippet.marker!r}"
    exec(compile(code, snippet.name, "exec"), {"__name__": "__snippet__"})
