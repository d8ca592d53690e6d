"""Each setting declared once, on its dataclass field: flag, help, choices, group and range.

A field made with :func:`option` carries everything the command line, a ``--config`` file and
``validate()`` need, so the parser is built from the fields (:func:`add_options`) and no table maps
flags to settings by hand. A field made plainly has no flag; a config file or a notebook still sets it.
Settings are named by their dotted path in the config (``embed.batch_size``).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import math
import re
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

NumberRule = tuple[str, Callable[[float], bool]]
"""What a number must be, in words (``at least 1``), and the test it must pass (besides being finite)."""
AT_LEAST_1: NumberRule = ("at least 1", lambda v: v >= 1)
AT_LEAST_0: NumberRule = ("0 or more", lambda v: v >= 0)
POSITIVE: NumberRule = ("positive", lambda v: v > 0)
SHARE: NumberRule = ("at least 0 and below 1", lambda v: 0 <= v < 1)
PROBABILITY: NumberRule = ("between 0 and 1", lambda v: 0 <= v <= 1)

NONE = "none"
"""A list option given ``none`` alone is the empty list (``--references none``)."""


@dataclass(frozen=True)
class Option:
    """A setting's command-line face. ``flags``: its flag then its aliases, none for a setting with no flag
    (the first names it in messages, else its dotted name); ``choices``: the values it may take, or a function
    giving them (for a table defined after the field); ``value``: what a flag that takes no argument stores
    (``--no-onnx`` stores False)."""

    flags: tuple[str, ...] = ()
    help: str | None = None
    choices: Sequence[Any] | Callable[[], Sequence[Any]] | None = None
    group: str | None = None
    number: NumberRule | None = None
    value: Any = True

    def allowed(self) -> tuple[Any, ...] | None:
        return tuple(self.choices()) if callable(self.choices) else None if self.choices is None else tuple(
            self.choices)


def option(default: Any, *, flags: Sequence[str] = (), help: str | None = None,
           choices: Sequence[Any] | Callable[[], Sequence[Any]] | None = None, group: str | None = None,
           number: NumberRule | None = None, value: Any = True) -> Any:
    """A dataclass field with its :class:`Option`; a flag needs a ``group`` (its heading in ``--help``)."""
    if flags and group is None:
        raise ValueError(f"option {flags[0]} needs a group")
    return field(default=default, metadata={"option": Option(tuple(flags), help, choices, group, number, value)})


@dataclass(frozen=True)
class Setting:
    """One leaf field of a config: its dotted name, type (``int | None`` as ``int``, optional) and option."""

    name: str
    kind: type
    optional: bool
    many: bool
    option: Option

    @property
    def label(self) -> str:
        """How messages name it: its flag, else its dotted name."""
        return self.option.flags[0] if self.option.flags else self.name

    def coerce(self, value: Any, source: str) -> Any:
        """``value`` (from a file: a list, a YAML string for a float such as ``1e-3``) as this setting's type.
        Raises ValueError naming the setting and ``source``."""
        if value is None:
            if self.optional:
                return None
            raise ValueError(f"{source}: {self.name} cannot be empty")
        if self.many:
            items = list(value) if isinstance(value, list | tuple) else [value]
            if items == [NONE]:
                return ()
            return tuple(self._one(item, source) for item in items)
        return self._one(value, source)

    def _one(self, value: Any, source: str) -> Any:
        if self.kind is bool:
            if isinstance(value, bool):
                return value
        elif self.kind in (int, float) and isinstance(value, int | float) and not isinstance(value, bool):
            if self.kind is float or (math.isfinite(value) and value == int(value)):  # 2.5 is no int
                return self.kind(value)
        elif self.kind in (int, float) and isinstance(value, str):
            # a quoted "3" is text in YAML and JSON alike; taking it as a number would hide a typo such as "3O"
            raise ValueError(f"{source}: {self.name} must be {self.kind.__name__}; got the text {value!r} (write "
                             f"numbers without quotes)")
        elif isinstance(value, str):
            return value
        raise ValueError(f"{source}: {self.name} must be {self.kind.__name__}; got {value!r}")

    def check(self, value: Any, source: str | None = None) -> None:
        """Raises ValueError naming the option (by its flag, or by ``source`` and its dotted name where it came
        from a file) when ``value`` is not one of its choices or its number is not finite or outside its range."""
        label = f"{source}: {self.name}" if source else self.label
        allowed = self.option.allowed()
        for item in (value if self.many else (value,)):
            if item is None and self.optional:
                continue
            if allowed is not None and item not in allowed:
                raise ValueError(f"{label} must be one of {', '.join(map(str, allowed))}; got {item!r}")
            if self.option.number is not None:
                wanted, ok = self.option.number
                if isinstance(item, bool) or not isinstance(item, int | float):
                    raise ValueError(f"{label} must be a number; got {item!r}")
                if not (math.isfinite(item) and ok(item)):
                    raise ValueError(f"{label} must be {wanted}; got {item}")


def settings_of(cls: type, prefix: str = "") -> Iterator[Setting]:
    """Every leaf setting of the dataclass ``cls``, nested dataclasses walked, in declaration order."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        if dataclasses.is_dataclass(kind):
            yield from settings_of(kind, f"{prefix}{f.name}.")
            continue
        args = typing.get_args(kind)
        optional = type(None) in args
        if optional:
            kind = next(a for a in args if a is not type(None))
        many = typing.get_origin(kind) is tuple
        if many:
            kind = typing.get_args(kind)[0]
        yield Setting(f"{prefix}{f.name}", kind, optional, many, f.metadata.get("option", Option()))


def check_settings(config: Any) -> None:
    """Every choice and number of ``config`` (a dataclass), in declaration order (:meth:`Setting.check`)."""
    for setting in settings_of(type(config)):
        value = config
        for part in setting.name.split("."):
            value = getattr(value, part)
        setting.check(value)


def add_options(parser: argparse.ArgumentParser, cls: type, *, only: Sequence[str] | None = None,
                skip: Sequence[str] = (), helps: Mapping[str, str] | None = None,
                choices: Mapping[str, Sequence[Any]] | None = None,
                groups: dict[str, argparse._ArgumentGroup] | None = None) -> dict[str, argparse._ArgumentGroup]:
    """Add the flag of every setting of ``cls`` that has one (or of those in ``only``, less ``skip``), under
    its group's heading; ``helps`` replaces a setting's help for this command, ``choices`` gives the choices of
    one a registry above the config checks (the reference models). Each flag's ``dest`` is the
    setting's dotted name and its default None, so :func:`given` tells what was asked for. Returns the groups
    by title (``groups`` extended when given), for a command's own options to join them."""
    groups = {} if groups is None else groups
    for setting in settings_of(cls):
        opt = setting.option
        if not opt.flags or setting.name in skip or (only is not None and setting.name not in only):
            continue
        if opt.group not in groups:
            groups[opt.group] = parser.add_argument_group(opt.group)
        help_text = (helps or {}).get(setting.name, opt.help)
        if setting.kind is bool:
            groups[opt.group].add_argument(*opt.flags, dest=setting.name, action="store_const", const=opt.value,
                                           default=None, help=help_text)
            continue
        allowed = tuple((choices or {})[setting.name]) if setting.name in (choices or {}) else opt.allowed()
        kwargs: dict[str, Any] = {"dest": setting.name, "default": None, "help": help_text, "type": setting.kind}
        if allowed is not None:
            kwargs["choices"] = (*allowed, NONE) if setting.many else allowed
        else:
            kwargs["metavar"] = opt.flags[0].lstrip("-").upper().replace("-", "_")
        if setting.many:
            kwargs["nargs"] = "+"
        groups[opt.group].add_argument(*opt.flags, **kwargs)
    return groups


def given(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The settings of ``cls`` the command line gave, by dotted name; those it left out are absent (so a preset
    or a file decides them, and a resumed run can tell what was asked of it)."""
    found = {}
    for setting in settings_of(cls):
        value = getattr(args, setting.name, None)
        if value is not None:
            found[setting.name] = setting.coerce(value, "the command line")
    return found


def read_settings_file(path: str | Path) -> dict[str, Any]:
    """A YAML (``.yaml``, ``.yml``) or JSON file's mapping, nested as a saved config is or with dotted keys.
    Raises FileNotFoundError, or ValueError when it cannot be read as a mapping."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such settings file")
    text = path.read_text()
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            values = yaml.load(text, Loader=_yaml_loader())
        except yaml.YAMLError as exc:
            raise ValueError(f"{path}: not readable as YAML: {exc}") from None
    else:
        try:
            values = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not readable as JSON (YAML files end in .yaml or .yml): {exc}") from None
    if values is None:
        raise ValueError(f"{path}: empty; a settings file holds a mapping such as `embed: {{epochs: 3}}`")
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a mapping of settings, got {type(values).__name__}")
    return values


def _yaml_loader() -> type:
    """PyYAML's safe loader reading numbers as YAML 1.2 does: ``1e-4`` (no dot) is a float, not YAML 1.1's string."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"""^(?:
        [-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""", re.X), list("-+0123456789."))
    return Loader


def flatten(values: Mapping[str, Any], cls: type, source: str) -> dict[str, Any]:
    """A nested (``{"embed": {"lr": 0.01}}``) or dotted (``{"embed.lr": 0.01}``) mapping as dotted settings of
    ``cls``, each coerced to its type. Raises ValueError naming every unknown setting, or a mistyped one."""
    known = {s.name: s for s in settings_of(cls)}
    sections = {name.rpartition(".")[0] for name in known} - {""}
    flat: dict[str, Any] = {}

    def walk(mapping: Mapping[str, Any], prefix: str) -> None:
        for key, value in mapping.items():
            name = f"{prefix}{key}"
            if name in sections and isinstance(value, dict):
                walk(value, f"{name}.")
            elif name in sections:
                raise ValueError(f"{source}: {name} is a section of settings and takes a mapping (such as "
                                 f"{name}: {{...}}); got {type(value).__name__} {value!r}")
            elif name in flat:
                raise ValueError(f"{source}: {name} is set twice ({flat[name]!r}, then {value!r}), nested and "
                                 f"dotted; keep one")
            else:
                flat[name] = value

    walk(values, "")
    unknown = sorted(set(flat) - set(known))
    if unknown:
        guesses = {name: difflib.get_close_matches(name, known, n=1) for name in unknown}
        hints = "".join(f"; {name}: did you mean {guess[0]}?" for name, guess in guesses.items() if guess)
        raise ValueError(f"{source}: unknown setting(s) {unknown}{hints}; settings are named as in a run's "
                         f"config.json")
    return {name: known[name].coerce(value, source) for name, value in flat.items()}
