"""Lazy Python configs: ``LazyCall`` nodes, loading, command-line overrides and YAML saving.

File format and semantics follow detectron2's LazyConfig (``detectron2/config/lazy.py``,
Apache-2.0, https://github.com/facebookresearch/detectron2): a config is a Python file whose
top-level dicts and ``LazyCall`` nodes form the config; config files import each other with
relative imports (``from .common.model import model``), and every load executes the files afresh,
so editing a loaded config never affects another load.
"""

from __future__ import annotations

import ast
import builtins
import difflib
import inspect
import logging
import os
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from diffmatte.utils.fileio import atomic_write_text

from .instantiate import TARGET_KEY, ConfigError, locate, target_to_string

__all__ = ["ConfigError", "LazyCall", "LazyConfig"]

logger = logging.getLogger(__name__)

# Marks the namespaces of executed config files; relative imports from them are resolved to files.
_CONFIG_PACKAGE = "diffmatte._lazy_config_"
_FLAGS = {"allow_objects": True}
_YAML_SUFFIXES = (".yaml", ".yml")


def _divide(numerator: float | int, denominator: float | int) -> float:
    if denominator == 0:
        raise ValueError(f"${{div:{numerator},{denominator}}} divides by zero")
    return numerator / denominator


# ``${div:a,b}`` = a / b, for values derived from others, e.g. the warm-up fraction
# ``${div:250,${train.max_iter}}``; omegaconf has no arithmetic of its own.
if not OmegaConf.has_resolver("div"):
    # omegaconf 2.4 renamed register_new_resolver (2.3) to register_resolver, whose 2.3
    # namesake is the legacy string-only API.
    if "replace" in inspect.signature(OmegaConf.register_resolver).parameters:
        OmegaConf.register_resolver("div", _divide)
    else:
        OmegaConf.register_new_resolver("div", _divide)


def _lists_for_tuples(obj: Any) -> Any:
    # omegaconf versions disagree on tuples (ListConfig vs TupleConfig): store lists everywhere.
    if isinstance(obj, Mapping) and not isinstance(obj, DictConfig):
        return {key: _lists_for_tuples(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_lists_for_tuples(value) for value in obj]
    return obj


class LazyCall:
    """Defer a call: ``LazyCall(Class)(kw=...)`` is a config node, built later by ``instantiate``.

    Configs import it as ``L``::

        model = L(DiffMatte)(backbone=L(ViT)(embed_dim=384), backbone_trimap="value")

    Args:
        target: the callable, or its dotted import path.
    """

    def __init__(self, target: Callable[..., Any] | str) -> None:
        if not (callable(target) or isinstance(target, str)):
            raise TypeError(f"LazyCall target must be callable or an import path, got {target!r}")
        self._target = target

    def __call__(self, **kwargs: Any) -> DictConfig:
        """Return a ``DictConfig`` with ``_target_`` and the keyword arguments."""
        content = {TARGET_KEY: self._target, **_lists_for_tuples(kwargs)}
        return DictConfig(content, flags=_FLAGS)


def _cast_to_config(obj: Any) -> Any:
    if isinstance(obj, Mapping) and not isinstance(obj, DictConfig):
        return DictConfig(_lists_for_tuples(obj), flags=_FLAGS)
    return obj


def _cast_module_dicts(module: ModuleType) -> None:
    for name, value in vars(module).items():
        if not name.startswith("_") and isinstance(value, dict):
            setattr(module, name, _cast_to_config(value))


def _compile(path: Path) -> Any:
    try:
        return compile(path.read_text(encoding="utf-8"), str(path), "exec")
    except SyntaxError as exc:
        raise ConfigError(f"{path}:{exc.lineno}: syntax error: {exc.msg}") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc.strerror})") from exc


def _new_namespace(path: Path) -> dict[str, Any]:
    package = f"{_CONFIG_PACKAGE}{uuid.uuid4().hex[:8]}"
    return {"__file__": str(path), "__package__": package, "__name__": f"{package}.{path.stem}"}


def _exec_file(path: Path) -> ModuleType:
    namespace = _new_namespace(path)
    module = ModuleType(namespace["__name__"])
    module.__dict__.update(namespace)
    exec(_compile(path), module.__dict__)
    return module


def _resolve_relative(origin: str, name: str, level: int) -> Path:
    base = Path(origin).parent
    for _ in range(level - 1):
        base = base.parent
    target = base.joinpath(*name.split(".")) if name else base
    if target.with_name(target.name + ".py").is_file():
        return target.with_name(target.name + ".py")
    if target.is_dir():
        return target
    dots = "." * level
    raise ConfigError(f"{origin}: 'from {dots}{name} import ...' found no file {target}.py")


def _import_relative(origin: str, name: str, fromlist: Sequence[str], level: int) -> ModuleType:
    target = _resolve_relative(origin, name, level)
    if target.is_file():
        module = _exec_file(target)
    else:
        init = target / "__init__.py"
        module = (
            _exec_file(init) if init.is_file() else ModuleType(_new_namespace(init)["__name__"])
        )
        # ``from .pkg import name`` also imports the file ``pkg/name.py``, as Python does.
        for attr in fromlist:
            if attr != "*" and not hasattr(module, attr) and (target / f"{attr}.py").is_file():
                setattr(module, attr, _exec_file(target / f"{attr}.py"))
    for attr in fromlist:
        if hasattr(module, attr):
            setattr(module, attr, _cast_to_config(getattr(module, attr)))
        if isinstance(getattr(module, attr, None), ModuleType):
            _cast_module_dicts(getattr(module, attr))
    return module


@contextmanager
def _relative_imports_as_files() -> Iterator[None]:
    """Inside config files, execute relatively imported files afresh instead of importing."""
    previous = builtins.__import__

    def config_import(
        name: str,
        globals: Mapping[str, Any] | None = None,
        locals: Mapping[str, Any] | None = None,
        fromlist: Sequence[str] | None = (),
        level: int = 0,
    ) -> ModuleType:
        package = (globals or {}).get("__package__") or ""
        if level == 0 or not package.startswith(_CONFIG_PACKAGE):
            return previous(name, globals, locals, fromlist, level)
        return _import_relative(globals["__file__"], name, fromlist or (), level)

    builtins.__import__ = config_import
    try:
        yield
    finally:
        builtins.__import__ = previous


def _parse_value(text: str) -> Any:
    """Read an override value like a Python literal, else a YAML scalar, else a plain string."""
    text = text.strip()
    if not text:
        return ""
    try:
        return _lists_for_tuples(ast.literal_eval(text))
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        pass
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if value is None or isinstance(value, (bool, int, float, list, dict)):
        return value
    return text


def _target_accepts(node: DictConfig, key: str) -> bool:
    if TARGET_KEY not in node:
        return False
    target = node[TARGET_KEY]
    try:
        if isinstance(target, str):
            target = locate(target)
        parameters = inspect.signature(target).parameters.values()
    except (ConfigError, ImportError, TypeError, ValueError):
        return False
    for parameter in parameters:
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            return True
        if parameter.name == key and parameter.kind is not inspect.Parameter.POSITIONAL_ONLY:
            return True
    return False


def _child(node: DictConfig | ListConfig, part: str) -> Any:
    if isinstance(node, ListConfig):
        if not part.lstrip("-").isdigit() or not -len(node) <= int(part) < len(node):
            raise KeyError(part)
        return node._get_node(int(part))
    if part not in node.keys():
        raise KeyError(part)
    return node._get_node(part)


def _missing_key(override: str, key: str, node: Any) -> ConfigError:
    message = f"override '{override}': key '{key}' does not exist"
    if isinstance(node, DictConfig):
        prefix, _, last = key.rpartition(".")
        close = difflib.get_close_matches(last, [str(k) for k in node.keys()], n=1)
        if close:
            message += f" (did you mean '{prefix + '.' if prefix else ''}{close[0]}'?)"
    return ConfigError(message + "; prefix it with '+' to add a new key")


def _set(cfg: DictConfig, override: str, key: str, value: Any, add: bool) -> None:
    parts = key.split(".")
    if not all(parts):
        raise ConfigError(f"override '{override}': malformed key '{key}'")
    node: Any = cfg
    for depth, part in enumerate(parts[:-1]):
        prefix = ".".join(parts[: depth + 1])
        try:
            child = _child(node, part)
        except KeyError:
            raise _missing_key(override, prefix, node) from None
        if not isinstance(child, (DictConfig, ListConfig)):
            raise ConfigError(
                f"override '{override}': '{prefix}' is a value ({child._value()!r}), not a group"
            )
        node = child
    last = parts[-1]
    try:
        _child(node, last)
    except KeyError:
        if isinstance(node, ListConfig) or not (add or _target_accepts(node, last)):
            raise _missing_key(override, key, node) from None
    try:
        node[int(last) if isinstance(node, ListConfig) else last] = value
    except OmegaConfBaseException as exc:
        raise ConfigError(f"override '{override}': {str(exc).splitlines()[0]}") from exc


def _to_yaml_tree(obj: Any, where: str) -> Any:
    if isinstance(obj, Mapping):
        out = {}
        for key, value in obj.items():
            path = f"{where}.{key}" if where else str(key)
            if key == TARGET_KEY and not isinstance(value, str):
                try:
                    value = target_to_string(value)
                except ConfigError as exc:
                    raise ConfigError(f"cannot save '{path}': {exc}") from exc
            out[key] = _to_yaml_tree(value, path)
        return out
    if isinstance(obj, (list, tuple)):
        return [_to_yaml_tree(value, f"{where}[{i}]") for i, value in enumerate(obj)]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if obj is None or isinstance(obj, (str, bool, int, float)):
        return obj
    raise ConfigError(f"cannot save '{where}': {type(obj).__name__} is not a YAML value")


class LazyConfig:
    """Load, override and save lazy configs (detectron2's ``LazyConfig`` API)."""

    @staticmethod
    def load(
        filename: str | os.PathLike[str], keys: str | Sequence[str] | None = None
    ) -> DictConfig | Any:
        """Load a Python (``.py``) or YAML (``.yaml``/``.yml``) config file.

        Python files are executed with relative imports resolved to config files next to them;
        every top-level ``dict``, ``DictConfig`` or ``ListConfig`` whose name does not start with
        ``_`` becomes a key. Each call executes every involved file again.

        Args:
            filename: the config file.
            keys: return only this key (a ``str``) or a tuple of these keys.

        Returns:
            The config (a ``DictConfig`` that may hold callables), or the selected key(s).

        Raises:
            ConfigError: missing or unreadable file, syntax error, bad relative import,
                unknown suffix or missing key.
        """
        path = Path(filename).resolve()
        if not path.is_file():
            raise ConfigError(f"{filename}: config file not found")
        if path.suffix == ".py":
            with _relative_imports_as_files():
                namespace = _exec_file(path).__dict__
            cfg = DictConfig(
                {
                    name: _cast_to_config(value)
                    for name, value in namespace.items()
                    if isinstance(value, (DictConfig, ListConfig, dict))
                    and not name.startswith("_")
                },
                flags=_FLAGS,
            )
        elif path.suffix in _YAML_SUFFIXES:
            try:
                loaded = OmegaConf.load(path)
            except (yaml.YAMLError, OmegaConfBaseException) as exc:
                raise ConfigError(f"{filename}: invalid YAML ({str(exc).splitlines()[0]})") from exc
            if not isinstance(loaded, DictConfig):
                raise ConfigError(f"{filename}: the top level of a config must be a mapping")
            cfg = DictConfig(OmegaConf.to_container(loaded, resolve=False), flags=_FLAGS)
        else:
            raise ConfigError(f"{filename}: unknown config type (expected .py, .yaml or .yml)")
        if keys is None:
            return cfg
        wanted = [keys] if isinstance(keys, str) else list(keys)
        for key in wanted:
            if key not in cfg:
                raise ConfigError(f"{filename}: no top-level key '{key}'")
        return cfg[keys] if isinstance(keys, str) else tuple(cfg[key] for key in wanted)

    @staticmethod
    def load_rel(filename: str, keys: str | Sequence[str] | None = None) -> DictConfig | Any:
        """Inside a config file: :meth:`load` a path relative to that file (e.g. a YAML)."""
        frame = inspect.currentframe()
        caller = frame.f_back.f_globals.get("__file__") if frame and frame.f_back else None
        if caller is None:
            raise ConfigError("LazyConfig.load_rel must be called from a config file")
        return LazyConfig.load(Path(caller).parent / filename, keys)

    @staticmethod
    def apply_overrides(cfg: DictConfig, overrides: Sequence[str]) -> DictConfig:
        """Apply command-line overrides ``key.sub=value`` in order, in place.

        Values are read as Python literals (``1``, ``5e-5``, ``'x'``, ``[1, 2]``, ``None``), else
        as YAML scalars (``true``, ``null``), else kept as the plain string (``out/run1``). The
        key must exist, or be a keyword argument of the ``_target_`` of its node; ``+key=value``
        adds a new key.

        Args:
            cfg: the config, modified in place.
            overrides: strings of the form ``key=value``.

        Returns:
            ``cfg``, for chaining.

        Raises:
            ConfigError: malformed override, or a key that does not exist.
        """
        for override in overrides:
            key, sep, text = override.partition("=")
            key = key.strip()
            if not sep or not key:
                raise ConfigError(f"override '{override}' is not of the form key=value")
            add = key.startswith("+")
            _set(cfg, override, key.removeprefix("+"), _parse_value(text), add)
        return cfg

    @staticmethod
    def save(cfg: DictConfig | Mapping[str, Any], filename: str | os.PathLike[str]) -> None:
        """Write a config as YAML (atomically); :meth:`load` reads it back to an equivalent one.

        Callable ``_target_`` values are stored as dotted import paths and interpolations such as
        ``${..lr}`` are kept unresolved.

        Raises:
            ConfigError: the config holds a value YAML cannot represent (an object, a lambda or
                local class as target); the message names its key.
        """
        path = atomic_write_text(filename, LazyConfig.to_yaml(cfg))
        logger.info("config saved to %s", path)

    @staticmethod
    def to_yaml(cfg: DictConfig | Mapping[str, Any]) -> str:
        """The YAML text :meth:`save` writes (to check that a config can be saved, early).

        Raises:
            ConfigError: as :meth:`save`.
        """
        container = OmegaConf.to_container(cfg, resolve=False) if OmegaConf.is_config(cfg) else cfg
        return OmegaConf.to_yaml(OmegaConf.create(_to_yaml_tree(container, "")))
