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


# What a constructor raises for an argument of the wrong type or value (``embed_dim='abc'``,
# ``depth=-1``); exactly these types, not their subclasses, are reported as config errors.
_BAD_VALUE_ERRORS = (TypeError, ValueError, RuntimeError, IndexError, ZeroDivisionError)


def _check_call(target: Callable[..., Any], kwargs: Mapping[str, Any], where: str) -> None:
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        return  # Builtins without a signature: let the call itself complain.
    try:
        signature.bind(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"cannot call {_target_name(target)} at '{where}': {exc}") from exc


def _join(where: str, key: object) -> str:
    return f"{where}.{key}" if where else str(key)


def _instantiate(cfg: Any, where: str, relative: str, runtime: dict[str, Any]) -> Any:
    if isinstance(cfg, (DictConfig, Mapping)):
        try:
            items = list(cfg.items())
        except OmegaConfBaseException as exc:
            raise ConfigError(f"cannot resolve config at '{where}': {exc}".splitlines()[0]) from exc
        values = {
            key: _instantiate(value, _join(where, key), _join(relative, key), runtime)
            for key, value in items
            if key != TARGET_KEY
        }
        for path in [p for p in runtime if p.rpartition(".")[0] == relative]:
            values[path.rpartition(".")[2]] = runtime.pop(path)
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
        except _BAD_VALUE_ERRORS as exc:
            if type(exc) not in _BAD_VALUE_ERRORS:
                raise  # A specific error (a dataset's, a checkpoint's) speaks for itself.
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            error = ConfigError(
                f"'{where or '<root>'}': {_target_name(target)} refused its arguments ({reason})"
            )
            error.config_key = where  # instantiate_key names the override behind it
            raise error from exc
    if isinstance(cfg, (ListConfig, list, tuple)) or (
        OmegaConf.is_config(cfg) and isinstance(cfg, Sequence)
    ):
        return [
            _instantiate(value, f"{where}[{i}]", _join(relative, i), runtime)
            for i, value in enumerate(cfg)
        ]
    return cfg


def instantiate(cfg: Any, runtime: Mapping[str, Any] | None = None) -> Any:
    """Recursively build every ``_target_`` node of a config.

    Args:
        cfg: a node made with :class:`~diffmatte.config.LazyCall`, a ``DictConfig``/``ListConfig``
            or plain dict/list containing such nodes, or any other value. Interpolations are
            resolved against the node's root config.
        runtime: arguments that exist only when the program runs (the built model for the
            optimizer's parameter groups, the iteration a resumed data stream starts at), by
            dotted path relative to ``cfg``, e.g. ``{"params.model": model}``. They are passed
            to the call of the node that holds them; the config itself is not changed.

    Returns:
        For a ``_target_`` node, the object returned by the call; for other mappings a plain
        ``dict`` and for sequences a plain ``list`` with their items instantiated; other values
        unchanged.

    Raises:
        ConfigError: a target cannot be imported, the arguments do not fit its signature (the
            message names the config key), a constructor refuses a value (a plain
            ``TypeError``, ``ValueError``, ``RuntimeError``, ``IndexError`` or
            ``ZeroDivisionError``, reported with the node's key), or a ``runtime`` path names
            no mapping of ``cfg``. Other errors of the constructors (e.g. a dataset's
            ``DatasetError``) propagate.
    """
    pending = dict(runtime or {})
    # Messages name keys from the config's root (model.backbone), also for a sub-node.
    where = cfg._get_full_key(None) if isinstance(cfg, (DictConfig, ListConfig)) else ""
    built = _instantiate(cfg, str(where or ""), "", pending)
    if pending:
        raise ConfigError(f"runtime argument(s) {sorted(pending)} match no node of the config")
    return built


def instantiate_key(cfg: Any, key: str, overrides: Sequence[str] = ()) -> Any:
    """Instantiate ``cfg[key]``, naming the command-line override behind a refused value.

    A value given on the command line reaches the constructors unchecked
    (``model.backbone.embed_dim=abc``, ``model.backbone.depth=-1``). When a constructor refuses
    it, the one-line :class:`ConfigError` of :func:`instantiate` is prefixed with the override
    whose key lies at or below the failing node (the last such one, as later overrides win).

    Args:
        cfg: the root config.
        key: a top-level key, e.g. ``"model"``.
        overrides: the ``key=value`` strings applied to ``cfg``.

    Returns:
        The instantiated node.

    Raises:
        ConfigError: as for :func:`instantiate`.
    """
    try:
        return instantiate(cfg[key])
    except ConfigError as err:
        node = getattr(err, "config_key", None)
        if not node:
            raise
        blamed = [
            override
            for override in overrides
            if (name := override.partition("=")[0].strip().removeprefix("+")) == node
            or name.startswith(node + ".")
            or node.startswith(name + ".")
        ]
        if not blamed:
            raise
        raise ConfigError(f"{blamed[-1]}: {err}") from err
