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


# Decoder channel lists (downsample_in, upsample_in) of the released configs (docs/models.md).
RELEASED_DECODER_CHANNELS = {
    "ViTS": ((7, 32, 64, 128), (384, 256, 128, 64, 32)),
    "ViTB": ((7, 32, 64, 128), (768, 256, 128, 64, 32)),
    "ViTS_1024": ((7, 32, 64, 128), (384, 256, 128, 64, 32)),
    "res34": ((7, 32, 64, 128, 128), (512, 256, 256, 128, 64, 32)),
    "swin_t": ((7, 32, 64, 128, 128), (768, 256, 256, 128, 64, 32)),
}


@pytest.fixture(scope="session")
def released_decoder_channels() -> dict:
    """``{config: (downsample_in, upsample_in)}`` of the released configs' decoders."""
    return RELEASED_DECODER_CHANNELS


@pytest.fixture(scope="session")
def random_decoder():
    """``random_decoder(config, n=2, h=32, w=64, seed=0)``: an eval-mode DUNet with a released
    config's channel lists, random weights and BatchNorm statistics (so that folding them
    matters), and inputs for it: x (N, 7, H, W), t (N,) and features at its stride."""

    def build(config: str, n: int = 2, h: int = 32, w: int = 64, seed: int = 0):
        import torch

        from diffmatte.modeling.decoder import DUNet

        downsample_in, upsample_in = RELEASED_DECODER_CHANNELS[config]
        torch.manual_seed(seed)
        model = DUNet(downsample_in, upsample_in)
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for param in model.parameters():
                param.copy_(torch.randn(param.shape, generator=gen) * 0.05)
            for module in model.modules():
                if isinstance(module, torch.nn.BatchNorm2d):
                    module.weight.add_(1.0)
                    mean = torch.randn(module.num_features, generator=gen) * 0.1
                    module.running_mean.copy_(mean)
                    module.running_var.copy_(torch.rand(module.num_features, generator=gen) + 0.5)
        gen = torch.Generator().manual_seed(seed + 1)
        stride = 2 ** len(downsample_in)
        x = torch.randn(n, 7, h, w, generator=gen)
        t = torch.rand(n, generator=gen)
        features = torch.randn(n, upsample_in[0], h // stride, w // stride, generator=gen)
        return model.eval(), (x, t, features)

    return build


@pytest.fixture(scope="session")
def check_attention_against_reference():
    """``check(attend)``: ``attend(q, k, v, rel_h, rel_w, grid, scale)`` on a 15 x 11 token grid
    (2 images, 3 heads, 5-row relative-position tables interpolated to 29 and 21 rows) must equal
    ``attention_reference`` in values (1e-5) and in the gradients of every input (1e-4).
    Returns the output."""

    def check(attend):
        import torch

        from diffmatte.modeling.backbone.vit import attention_reference

        gen = torch.Generator().manual_seed(3)
        b, heads, dim, grid = 2, 3, 8, (15, 11)
        q, k, v = (torch.randn(b, heads, grid[0] * grid[1], dim, generator=gen) for _ in range(3))
        rel_h = torch.randn(9, dim, generator=gen)
        rel_w = torch.randn(9, dim, generator=gen)
        leaves = [t.requires_grad_() for t in (q, k, v, rel_h, rel_w)]
        scale = dim**-0.5
        ref = attention_reference(q, k, v, rel_h, rel_w, grid, grid, scale)
        out = attend(q, k, v, rel_h, rel_w, grid, scale)
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
        weight = torch.randn(out.shape, generator=gen)
        grads_ref = torch.autograd.grad((ref * weight).sum(), leaves)
        grads_out = torch.autograd.grad((out * weight).sum(), leaves)
        for g_out, g_ref in zip(grads_out, grads_ref, strict=True):
            torch.testing.assert_close(g_out, g_ref, atol=1e-4, rtol=1e-4)
        return out

    return check


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
