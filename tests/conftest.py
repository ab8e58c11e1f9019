"""Shared test fixtures: the released checkpoints' key lists, where the real images live (they
may not be redistributed) and how to skip without them."""

import json
import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
# Real data (alphamatting.com) may not be redistributed, so it is read from beside the checkout.
SHARED_DIR = Path(os.environ.get("DIFFMATTE_SHARED", REPO_ROOT.parent / "shared"))


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data not found at {path} (set DIFFMATTE_SHARED to the shared folder)")
    return path


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """The folder with real images, alphas, trimaps and backgrounds (``$DIFFMATTE_SHARED/data``,
    see the README's note on real test data)."""
    return _require(SHARED_DIR / "data")


@pytest.fixture(scope="session")
def metric_fixtures_dir() -> Path:
    """Images with the official MATLAB evaluation's figures (``$DIFFMATTE_SHARED/fixtures/metrics``,
    see docs/evaluation.md)."""
    return _require(SHARED_DIR / "fixtures" / "metrics")


@pytest.fixture(scope="session")
def released_keys():
    """Reader of ``tests/fixtures/checkpoint_keys/<config>.json``: ``released_keys("ViTS")``.

    Each file lists what a released checkpoint holds (docs/models.md#checkpoint-contents): its
    ``params`` and ``buffers`` (name -> shape), its ``state_dict_order`` and parameter counts.
    """

    def read(config: str) -> dict:
        path = REPO_ROOT / "tests" / "fixtures" / "checkpoint_keys" / f"{config}.json"
        return json.loads(path.read_text())

    return read


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for the module's tests, restored afterwards.

    Tiny models gain nothing from threads, and competing OpenMP threads are slow on busy shared
    cores. Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_config() -> Path:
    """``tests/configs/tiny_vit.py``: a tiny ViTS-style DiffMatte (random weights only)."""
    return REPO_ROOT / "tests" / "configs" / "tiny_vit.py"


@pytest.fixture(scope="session")
def build_tiny_model(tiny_config):
    """Builder of the DiffMatte of :func:`tiny_config`: ``build(seed=0, criterion=None,
    overrides=())``.

    The weights are drawn after ``torch.manual_seed(seed)``; the model is in training mode.
    ``criterion`` is a loss class built without arguments (e.g. ``MattingCriterion``), or None
    for a model that can only sample; ``overrides`` are ``key=value`` config overrides.
    """

    def build(seed: int = 0, criterion=None, overrides=()):
        import torch

        from diffmatte.config import LazyCall, LazyConfig, instantiate

        cfg = LazyConfig.apply_overrides(LazyConfig.load(str(tiny_config)), list(overrides))
        cfg.model.criterion = None if criterion is None else LazyCall(criterion)()
        torch.manual_seed(seed)
        return instantiate(cfg.model)

    return build


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory, build_tiny_model):
    """A weights file of the :func:`tiny_config` model (random weights, seed 0)."""
    from diffmatte.engine.checkpoint import save_model_weights

    return save_model_weights(build_tiny_model(0), tmp_path_factory.mktemp("weights") / "tiny.pth")


@pytest.fixture(scope="session")
def run_script():
    """Runner of a repository script as a subprocess, as a user runs it.

    ``run(script, *args, cwd=None, env=None) -> subprocess.CompletedProcess`` with text output;
    ``script`` is relative to the repository root (``"inference.py"``, ``"tools/x.py"``). The
    process imports this checkout's ``diffmatte`` and uses one thread.
    """
    import subprocess
    import sys

    def run(script, *args, cwd=None, env=None, timeout=300):
        environment = dict(os.environ, OMP_NUM_THREADS="1")
        environment["PYTHONPATH"] = os.pathsep.join(
            [str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
        )
        environment.update(env or {})
        command = [sys.executable, str(REPO_ROOT / script), *map(str, args)]
        return subprocess.run(
            command, capture_output=True, text=True, cwd=cwd, env=environment, timeout=timeout
        )

    return run


class ScriptMain:
    """``main(argv) -> exit status`` of a repository script, run as a subprocess (as a user runs
    it); its stdout and stderr are replayed into this process's, so ``capsys`` sees them."""

    def __init__(self, run, script: str) -> None:
        self.run, self.script = run, script

    def main(self, argv) -> int:
        import sys

        result = self.run(self.script, *argv)
        sys.stdout.write(result.stdout)
        sys.stderr.write(result.stderr)
        return result.returncode


@pytest.fixture(scope="session")
def script_main(run_script):
    """``script_main("tools/x.py").main(argv)``: see :class:`ScriptMain`."""
    return lambda script: ScriptMain(run_script, script)


@pytest.fixture(scope="session")
def assert_one_error():
    """Checker of a failed run: ``check(result, status, expected)`` asserts the exit status, no
    traceback, and exactly one stderr line with ``error:``, which begins with ``error: `` and
    contains ``expected``."""

    def check(result, status, expected):
        assert result.returncode == status, result.stderr
        assert "Traceback" not in result.stderr, result.stderr
        errors = [line for line in result.stderr.splitlines() if "error:" in line]
        assert len(errors) == 1, result.stderr
        assert errors[0].startswith("error: ") and expected in errors[0], result.stderr

    return check
