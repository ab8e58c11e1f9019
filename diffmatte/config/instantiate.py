"""Build objects from lazy config nodes.

Semantics follow detectron2's ``detectron2/config/instantiate.py`` (Apache-2.0): a mapping with a
``_target_`` key is a deferred call ``_target_(**other_keys)``; the target is a callable or its
dotted import path; arguments are built first, depth first. Unlike detectron2, plain mappings and
lists without ``_target_`` are also walked, so calls nested anywhere are built.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

__all__ = ["ConfigError", "instantiate", "instantiate_key", "locate", "target_to_string"]

TARGET_KEY = "_target_"


class ConfigError(ValueError):
    """A config file, override or node that cannot be used; the message is one line."""


def locate(name: str) -> Any:
    """Import an object from its dotted path, e.g. ``"torch.optim.AdamW"``.

    The longest importable module prefix is imported, the rest is resolved by attribute access,
    so nested names (``"pkg.module.Class.method"``) work too.

    Raises:
        ConfigError: nothing importable under that name.
    """
    parts = name.split(".")
    if not name or not all(parts):
        raise ConfigError(f"invalid import path {name!r}")
    module = None
    for split in range(len(parts), 0, -1):
        module_name = ".".join(parts[:split])
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            # Only a missing prefix means "try shorter"; a missing dependency inside is an error.
            missing = exc.name or ""
            if module_name != missing and not module_name.startswith(missing + "."):
                raise
            continue
        obj: Any = module
        try:
            for attr in parts[split:]:
                obj = getattr(obj, attr)
        except AttributeError:
            break
        return obj
    raise ConfigError(f"cannot locate {name!r}: no such module or attribute")


def target_to_string(obj: Any) -> str:
    """The shortest dotted import path that :func:`locate` resolves back to ``obj``.

    ``torch.optim.adamw.AdamW`` becomes ``torch.optim.AdamW``, as detectron2 does when saving.

    Raises:
        ConfigError: ``obj`` is not importable by name (a lambda, a local class, ...).
    """
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if not module or not qualname or "<" in qualname:
        raise ConfigError(f"{obj!r} cannot be referred to by an import path")
    parts = module.split(".")
    for split in range(1, len(parts) + 1):
        candidate = ".".join(parts[:split]) + "." + qualname
        try:
            if locate(candidate) is obj:
                return candidate
        except (ConfigError, ImportError):
            continue
    raise ConfigError(f"{module}.{qualname} does not resolve back to {obj!r}")


def _target_name(target: Any) -> str:
    if isinstance(target, str):
        return target
    module = getattr(target, "__module__", "")
    return f"{module}.{getattr(target, '__qualname__', repr(target))}"


def _check_call(target: Callable[..., Any], kwargs: Mapping[str, Any], where: str) -> None:
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        return  # Builtins without a signature: let the call itself complain.
    try:
        signature.bind(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"cannot call {_target_name(target)} at '{where}': {exc}") from exc


def _instantiate(cfg: Any, where: str) -> Any:
    if isinstance(cfg, (DictConfig, Mapping)):
        try:
            items = list(cfg.items())
        except OmegaConfBaseException as exc:
            raise ConfigError(f"cannot resolve config at '{where}': {exc}".splitlines()[0]) from exc
        values = {
            key: _instantiate(value, f"{where}.{key}" if where else str(key))
            for key, value in items
            if key != TARGET_KEY
        }
        if TARGET_KEY not in cfg:
            return values
        target = cfg[TARGET_KEY]
        if isinstance(target, str):
            target = locate(target)
        if not callable(target):
            raise ConfigError(f"'{where}.{TARGET_KEY}' is not callable: {target!r}")
        _check_call(target, values, where or "<root>")
        try:
            return target(**values)
        except ConfigError:
            raise
        except Exception as exc:
            # The innermost failing node; instantiate_key turns it into a one-line ConfigError.
            if not hasattr(exc, "config_key"):
                exc.config_key = where
            raise
    if isinstance(cfg, (ListConfig, list, tuple)) or (
        OmegaConf.is_config(cfg) and isinstance(cfg, Sequence)
    ):
        return [_instantiate(value, f"{where}[{i}]") for i, value in enumerate(cfg)]
    return cfg


def instantiate(cfg: Any) -> Any:
    """Recursively build every ``_target_`` node of a config.

    Args:
        cfg: a node made with :class:`~diffmatte.config.LazyCall`, a ``DictConfig``/``ListConfig``
            or plain dict/list containing such nodes, or any other value. Interpolations are
            resolved against the node's root config.

    Returns:
        For a ``_target_`` node, the object returned by the call; for other mappings a plain
        ``dict`` and for sequences a plain ``list`` with their items instantiated; other values
        unchanged.

    Raises:
        ConfigError: a target cannot be imported, or the arguments do not fit its signature
            (the message names the config key). Errors raised inside the constructors propagate,
            with an attribute ``config_key``: the key of the innermost node that failed, relative
            to ``cfg``.
    """
    return _instantiate(cfg, "")


def instantiate_key(cfg: Any, key: str, overrides: Sequence[str] = ()) -> Any:
    """Instantiate ``cfg[key]``, turning a failure inside a constructor into one line.

    A value given on the command line reaches the constructors unchecked
    (``model.backbone.embed_dim=abc``, ``model.backbone.depth=-1``), and they fail with errors of
    their own. This names the node that failed and the override responsible for it: the one
    whose key lies at or below that node (the last such one, as later overrides win).

    Args:
        cfg: the root config.
        key: a top-level key, e.g. ``"model"``.
        overrides: the ``key=value`` strings applied to ``cfg``.

    Returns:
        The instantiated node.

    Raises:
        ConfigError: as for :func:`instantiate`, or a constructor failed (one line naming the
            override, or the node when no override applies).
    """
    try:
        return instantiate(cfg[key])
    except ConfigError:
        raise
    except Exception as exc:
        relative = getattr(exc, "config_key", None)
        if relative is None:
            raise
        node = f"{key}.{relative}" if relative else key
        detail = (str(exc).strip().splitlines() or [""])[0]
        problem = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
        blamed = [
            override
            for override in overrides
            if (name := override.partition("=")[0].strip().removeprefix("+")) == node
            or name.startswith(node + ".")
            or node.startswith(name + ".")
        ]
        if blamed:
            raise ConfigError(f"{blamed[-1]}: cannot build '{node}' ({problem})") from exc
        raise ConfigError(f"cannot build '{node}' ({problem})") from exc
