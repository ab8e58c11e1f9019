"""Tests for diffmatte.config.instantiate: nested calls, lists, string targets, errors."""

import collections
import fractions
import types

import pytest
import torch
from omegaconf import DictConfig

from diffmatte.config import (
    ConfigError,
    LazyConfig,
    instantiate,
    instantiate_key,
    locate,
    target_to_string,
)
from diffmatte.config import LazyCall as L


def test_nested_calls_lists_and_plain_dicts() -> None:
    cfg = DictConfig(
        {
            "net": L(torch.nn.Sequential)(),
            "outer": L(types.SimpleNamespace)(
                inner=L(fractions.Fraction)(numerator=3, denominator=4),
                layers=[L(torch.nn.Linear)(in_features=2, out_features=5), 7],
                plain={"frac": L(fractions.Fraction)(numerator=1, denominator=2), "n": 3},
            ),
        },
        flags={"allow_objects": True},
    )
    out = instantiate(cfg)
    assert isinstance(out, dict) and isinstance(out["net"], torch.nn.Sequential)
    outer = out["outer"]
    assert outer.inner == fractions.Fraction(3, 4)
    assert isinstance(outer.layers, list) and outer.layers[1] == 7
    assert isinstance(outer.layers[0], torch.nn.Linear)
    assert outer.layers[0].weight.shape == (5, 2)
    assert outer.plain == {"frac": fractions.Fraction(1, 2), "n": 3}


def test_string_target_and_interpolation() -> None:
    cfg = DictConfig(
        {
            "size": 6,
            "layer": {
                "_target_": "torch.nn.Linear",
                "in_features": "${..size}",
                "out_features": "${.in_features}",
            },
        }
    )
    layer = instantiate(cfg.layer)
    assert isinstance(layer, torch.nn.Linear)
    assert layer.weight.shape == (6, 6)


def test_keeps_non_config_values() -> None:
    module = torch.nn.ReLU()
    cfg = L(types.SimpleNamespace)(act=None, values=(1, 2))
    cfg.act = module
    out = instantiate(cfg)
    assert out.act is module
    assert out.values == [1, 2]
    assert instantiate(5) == 5 and instantiate("text") == "text"


def test_bad_argument_names_the_key() -> None:
    cfg = DictConfig({"model": {"head": L(torch.nn.Linear)(in_features=2, out_feat=3)}})
    with pytest.raises(ConfigError, match=r"torch.nn.*Linear at 'model.head'.*out_feat"):
        instantiate(cfg)


def test_unknown_target() -> None:
    with pytest.raises(ConfigError, match="cannot locate 'torch.nn.NoSuchLayer'"):
        instantiate({"_target_": "torch.nn.NoSuchLayer"})


def test_refused_values_name_the_key_and_specific_errors_propagate() -> None:
    cfg = DictConfig({"frac": L(fractions.Fraction)(numerator=1, denominator=0)})
    with pytest.raises(
        ConfigError, match=r"^'frac': fractions.Fraction refused its arguments"
    ) as info:
        instantiate(cfg)
    assert isinstance(info.value.__cause__, ZeroDivisionError)

    class SpecificError(ValueError):
        pass

    def fail() -> None:
        raise SpecificError("kept as it is")

    with pytest.raises(SpecificError, match="kept as it is"):
        instantiate(L(fail)())


def test_constructor_errors_carry_the_node_key() -> None:
    cfg = DictConfig({"outer": {"inner": L(fractions.Fraction)(numerator=1, denominator=0)}})
    with pytest.raises(ConfigError) as raised:
        instantiate(cfg)
    assert raised.value.config_key == "outer.inner"


def test_instantiate_key_names_the_override() -> None:
    cfg = DictConfig({"model": {"layer": L(torch.nn.Linear)(in_features=2, out_features=3)}})
    overrides = ["model.layer.out_features=-1"]
    LazyConfig.apply_overrides(cfg, overrides)
    with pytest.raises(ConfigError) as raised:
        instantiate_key(cfg, "model", ["model.other=1", *overrides])
    message = str(raised.value)
    assert message.startswith(
        "model.layer.out_features=-1: 'model.layer': torch.nn.modules.linear.Linear refused"
    )
    assert "\n" not in message
    cfg = DictConfig({"model": L(fractions.Fraction)(numerator=1, denominator=0)})
    with pytest.raises(ConfigError, match=r"^'model': fractions.Fraction refused its arguments"):
        instantiate_key(cfg, "model")


def test_locate_and_target_to_string() -> None:
    assert locate("torch.optim.AdamW") is torch.optim.AdamW
    assert locate("collections.OrderedDict.fromkeys") == collections.OrderedDict.fromkeys
    assert target_to_string(torch.nn.Linear) == "torch.nn.Linear"
    assert target_to_string(torch.optim.AdamW) == "torch.optim.AdamW"
    with pytest.raises(ConfigError):
        locate("no_such_package_xyz.thing")
    with pytest.raises(ConfigError, match="import path"):
        target_to_string(lambda: None)


def test_runtime_arguments_reach_their_node_without_changing_the_config() -> None:
    cfg = L(types.SimpleNamespace)(
        inner=L(fractions.Fraction)(denominator=4), items=[L(types.SimpleNamespace)(a=1)]
    )
    out = instantiate(cfg, runtime={"inner.numerator": 3, "items.0.b": 2, "top": "t"})
    assert out.inner == fractions.Fraction(3, 4) and out.top == "t"
    assert (out.items[0].a, out.items[0].b) == (1, 2)
    assert "numerator" not in cfg.inner and "top" not in cfg
    with pytest.raises(ConfigError, match=r"\['nowhere.x'\] match no node"):
        instantiate(cfg, runtime={"inner.numerator": 3, "nowhere.x": 1})


def test_div_resolver_derives_values() -> None:
    from diffmatte.config import LazyConfig

    cfg = LazyConfig.apply_overrides(
        DictConfig({"n": 1000, "frac": "${div:250,${n}}"}, flags={"allow_objects": True}), ["n=500"]
    )
    assert cfg.frac == 0.5
    cfg.n = 0
    with pytest.raises(ConfigError, match="divides by zero"):
        instantiate(cfg)
