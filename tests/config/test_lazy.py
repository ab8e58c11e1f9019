"""Tests for diffmatte.config.lazy: loading, relative imports, overrides, save/load round trip."""

import sys
import textwrap
import types
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig, OmegaConf

from diffmatte.config import ConfigError, LazyConfig, instantiate
from diffmatte.config import LazyCall as L


def _write(path: Path, source: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source))
    return path


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    """A config tree like configs/: common parts, a base variant and variants importing it."""
    _write(tmp_path / "common" / "__init__.py", "")
    _write(
        tmp_path / "common" / "model.py",
        """
        import torch
        from diffmatte.config import LazyCall as L

        model = L(torch.nn.Linear)(in_features=4, out_features=2)
        """,
    )
    _write(
        tmp_path / "common" / "train.py",
        """
        EPOCH = 100  # a constant: importable, but not a config key

        train = dict(max_iter=EPOCH * 3, output_dir="./output", amp=dict(enabled=True))
        """,
    )
    _write(
        tmp_path / "common" / "optimizer.py",
        """
        import torch
        from diffmatte.config import LazyCall as L

        optimizer = L(torch.optim.SGD)(params=None, lr=0.1, momentum="${.lr}")
        """,
    )
    _write(
        tmp_path / "base.py",
        """
        from .common.model import model
        from .common.optimizer import optimizer
        from .common.train import EPOCH, train

        _private = dict(a=1)
        constant = 3
        train.max_iter = EPOCH * 5
        """,
    )
    _write(
        tmp_path / "variants" / "big.py",
        """
        from ..base import model, optimizer, train
        from ..common import train as train_module

        model.out_features = 8
        optimizer.lr = 0.5
        train.copied = train_module.train.max_iter
        """,
    )
    return tmp_path


def test_load_keeps_configs_only(tree: Path) -> None:
    cfg = LazyConfig.load(tree / "base.py")
    assert isinstance(cfg, DictConfig)
    assert set(cfg.keys()) == {"model", "optimizer", "train"}
    assert cfg.model._target_ is torch.nn.Linear
    assert cfg.train.max_iter == 500 and cfg.train.amp.enabled is True
    assert cfg.optimizer.momentum == 0.1  # ${.lr}


def test_relative_imports_parent_package_and_submodule(tree: Path) -> None:
    cfg = LazyConfig.load(str(tree / "variants" / "big.py"))
    assert cfg.model.out_features == 8 and cfg.model.in_features == 4
    assert cfg.optimizer.lr == 0.5 and cfg.optimizer.momentum == 0.5
    # `from ..common import train` executed common/train.py itself, untouched by base.py.
    assert cfg.train.max_iter == 500 and cfg.train.copied == 300


def test_every_load_is_fresh(tree: Path) -> None:
    modules_before = set(sys.modules)
    LazyConfig.load(tree / "variants" / "big.py")
    base = LazyConfig.load(tree / "base.py")
    assert base.model.out_features == 2 and base.optimizer.lr == 0.1
    base.model.out_features = 99
    assert LazyConfig.load(tree / "base.py").model.out_features == 2
    assert set(sys.modules) == modules_before
    # A changed file is read again rather than served from a cache.
    _write(tree / "common" / "train.py", "train = dict(max_iter=7)\nEPOCH = 1\n")
    assert LazyConfig.load(tree / "base.py").train.max_iter == 5


def test_load_keys(tree: Path) -> None:
    model = LazyConfig.load(tree / "base.py", keys="model")
    assert model.in_features == 4
    model, train = LazyConfig.load(tree / "base.py", keys=("model", "train"))
    assert train.output_dir == "./output"
    with pytest.raises(ConfigError, match="no top-level key 'lr'"):
        LazyConfig.load(tree / "base.py", keys="lr")


def test_load_errors(tree: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        LazyConfig.load(tree / "missing.py")
    with pytest.raises(ConfigError, match=r"broken.py:2: syntax error"):
        LazyConfig.load(_write(tree / "broken.py", "x = 1\ny = 2 +\n"))
    with pytest.raises(ConfigError, match=r"'from .nope import \.\.\.' found no file"):
        LazyConfig.load(_write(tree / "bad_import.py", "from .nope import model\n"))
    with pytest.raises(ConfigError, match="unknown config type"):
        LazyConfig.load(_write(tree / "x.json", "{}"))
    with pytest.raises(ConfigError, match="must be a mapping"):
        LazyConfig.load(_write(tree / "list.yaml", "- 1\n- 2\n"))


def test_load_rel_yaml_from_python_config(tree: Path) -> None:
    _write(tree / "extra.yaml", "schedule:\n  lr: 0.25\n  steps: [1, 2]\n")
    _write(
        tree / "with_yaml.py",
        """
        from diffmatte.config import LazyConfig

        schedule = LazyConfig.load_rel("extra.yaml", keys="schedule")
        """,
    )
    cfg = LazyConfig.load(tree / "with_yaml.py")
    assert cfg.schedule.lr == 0.25 and list(cfg.schedule.steps) == [1, 2]


def test_overrides_parse_values(tree: Path) -> None:
    cfg = LazyConfig.load(tree / "base.py")
    LazyConfig.apply_overrides(
        cfg,
        [
            "model.out_features=16",
            "optimizer.lr=5e-5",
            "train.output_dir='runs/x'",
            "train.amp.enabled=false",
            "train.max_iter=None",
            "+train.milestones=[10, 20]",
            "+train.pair=(1, 2)",
        ],
    )
    assert cfg.model.out_features == 16
    assert cfg.optimizer.lr == pytest.approx(5e-5) and cfg.optimizer.momentum == pytest.approx(5e-5)
    assert cfg.train.output_dir == "runs/x"
    assert cfg.train.amp.enabled is False
    assert cfg.train.max_iter is None
    assert list(cfg.train.milestones) == [10, 20] and list(cfg.train.pair) == [1, 2]
    LazyConfig.apply_overrides(cfg, ["train.milestones.1=30", "train.output_dir=weights/vit s"])
    assert list(cfg.train.milestones) == [10, 30]
    assert cfg.train.output_dir == "weights/vit s"


def test_override_default_argument_of_target(tree: Path) -> None:
    cfg = LazyConfig.load(tree / "base.py")
    # `bias` is not written in the config but is a keyword of torch.nn.Linear.
    LazyConfig.apply_overrides(cfg, ["model.bias=False"])
    assert instantiate(cfg.model).bias is None


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "model.out_feature=3",
            r"key 'model.out_feature' does not exist \(did you mean "
            r"'model.out_features'\?\)",
        ),
        ("modl.out_features=3", r"key 'modl' does not exist \(did you mean 'model'\?\)"),
        ("train.amp.enabled.x=1", r"'train.amp.enabled' is a value"),
        ("train.nothing=1", r"key 'train.nothing' does not exist; prefix it with '\+'"),
        ("train.max_iter", "not of the form key=value"),
        ("train..x=1", "malformed key"),
    ],
)
def test_override_errors(tree: Path, override: str, message: str) -> None:
    cfg = LazyConfig.load(tree / "base.py")
    with pytest.raises(ConfigError, match=message):
        LazyConfig.apply_overrides(cfg, [override])


def test_save_load_round_trip(tree: Path, tmp_path: Path) -> None:
    cfg = LazyConfig.load(tree / "variants" / "big.py")
    cfg.extra = L(types.SimpleNamespace)(
        layers=[L("torch.nn.Linear")(in_features=2, out_features=3), 4], scale=0.2
    )
    out = tmp_path / "out" / "config.yaml"
    LazyConfig.save(cfg, out)
    text = out.read_text()
    assert "_target_: torch.nn.Linear" in text
    assert "momentum: ${.lr}" in text  # interpolations are kept, not resolved
    loaded = LazyConfig.load(out)
    assert loaded.optimizer.momentum == 0.5
    LazyConfig.apply_overrides(loaded, ["optimizer.lr=0.3"])
    assert loaded.optimizer.momentum == 0.3
    LazyConfig.apply_overrides(loaded, ["optimizer.lr=0.5"])
    # Same tree once callables are written as import paths, and the same objects when built.
    LazyConfig.save(loaded, tmp_path / "again.yaml")
    assert (tmp_path / "again.yaml").read_text() == text
    assert OmegaConf.to_container(loaded.train) == OmegaConf.to_container(cfg.train)
    torch.manual_seed(0)
    first = instantiate(cfg.extra)
    torch.manual_seed(0)
    second = instantiate(loaded.extra)
    assert second.layers[1] == 4 and second.scale == 0.2
    assert torch.equal(first.layers[0].weight, second.layers[0].weight)
    assert not list(out.parent.glob(".*tmp"))


def test_save_rejects_unrepresentable_values(tmp_path: Path) -> None:
    cfg = DictConfig({"model": L(types.SimpleNamespace)()}, flags={"allow_objects": True})
    cfg.model.act = torch.nn.ReLU()
    with pytest.raises(ConfigError, match="cannot save 'model.act': ReLU"):
        LazyConfig.save(cfg, tmp_path / "c.yaml")
    with pytest.raises(ConfigError, match="cannot save 'f._target_'"):
        LazyConfig.save({"f": L(lambda: 1)()}, tmp_path / "c.yaml")
    assert not (tmp_path / "c.yaml").exists()
