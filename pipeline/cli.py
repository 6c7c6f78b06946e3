"""The one dataclass -> argparse helper every script uses: a flag per field, typed from the field's annotation.

`--some-field` for `some_field`; bools get `--x/--no-x`; `X | None` takes an X (None is the default "auto");
tuples and lists take several values; dicts take JSON. A nested dataclass field is left out unless its metadata has
`flatten`: a string is the flag prefix of its fields (`"judge-"`: `--judge-epochs` for `judge.epochs`; `""`: the
fields as if they were the outer class's). Field metadata: `help`, `choices` (listed in --help as {a,b,c}),
`flatten`, `aliases` (more flags for the same field), `default_text` (what --help shows as the default, e.g. "none"
where None means "not given" rather than "chosen automatically") and `cli=False` (no flag).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import types
import typing
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

from data.io import DiskFullError, NotWritableError

T = TypeVar("T")
# shown as one line, not a traceback (FloatingPointError: a diverging training loss)
USER_ERRORS = (FileNotFoundError, FileExistsError, ValueError, KeyError, FloatingPointError, DiskFullError,
               NotWritableError)


def _unwrap(hint: Any) -> tuple[Any, Any]:
    """(origin, first argument) of a type hint with `None` removed from unions: `int | None` -> (int, None)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    origin = typing.get_origin(hint) or hint
    args = typing.get_args(hint)
    return origin, (args[0] if args else None)


_METAVARS = {int: "N", float: "X"}


def _metavar(kind: Any, meta: Any) -> str:
    """What --help shows for a flag's value: its allowed values {a,b,c} when it has choices, else N, X or S."""
    if "choices" in meta:
        return "{" + ",".join(str(c) for c in meta["choices"]) + "}"
    return _METAVARS.get(kind, "S")


def run_folder_field() -> Any:
    """The `run` field of the scripts that read a run folder: `--run` or `--run-dir` (torchrun takes `--run` for a
    prefix of its own `--run-path` and stops, so scripts launched by torchrun are given `--run-dir`)."""
    return dataclasses.field(default=None, metadata={"help": "run folder; None = the latest", "aliases": ("--run-dir",)})


class _Compact(argparse.RawDescriptionHelpFormatter):
    """One line per flag where it fits, so a script's --help fits on a screen."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=36, width=118)


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not JSON ({e}): {text!r}") from None


def _add_fields(parser: argparse.ArgumentParser, cls: type, prefix: str = "", flag_prefix: str = "",
                defaults: Any = None) -> None:
    """Flags for `cls`'s fields; `defaults` (an instance, default `cls()`) gives the defaults shown: a nested
    config's are its outer field's default, which may differ from the nested class's own."""
    hints = typing.get_type_hints(cls)
    defaults = cls() if defaults is None else defaults
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if meta.get("cli", True) is False:
            continue
        origin, item = _unwrap(hints[f.name])
        if dataclasses.is_dataclass(origin):
            if isinstance(meta.get("flatten"), str):
                _add_fields(parser, origin, prefix=f"{prefix}{f.name}.", flag_prefix=flag_prefix + meta["flatten"],
                            defaults=getattr(defaults, f.name))
            continue
        dest = prefix + f.name
        flag = "--" + flag_prefix + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        text = meta.get("help", "")
        shown = meta.get("default_text") or ("auto" if default is None else (
            " ".join(map(str, default)) if isinstance(default, (tuple, list)) else default))
        kw: dict[str, Any] = dict(dest=dest, default=argparse.SUPPRESS, help=f"{text} (default: {shown})".strip())
        if origin is bool:
            kw["action"] = argparse.BooleanOptionalAction
        elif origin in (tuple, list):
            kw.update(nargs="+", type=item if item in (int, float) else str, metavar=_metavar(item, meta))
        elif origin is dict:
            kw.update(type=_json, metavar="JSON")
        else:
            kw.update(type=origin if origin in (int, float) else str, metavar=_metavar(origin, meta))
        if "choices" in meta:
            kw["choices"] = meta["choices"]
        parser.add_argument(flag, *meta.get("aliases", ()), **kw)


def build_config(cls: type[T], values: dict[str, Any], defaults: Any = None) -> T:
    """The dataclass from parsed values, nested ones (`judge.epochs`) included, lists made tuples where typed so;
    fields not given keep `defaults`' values (a nested config: its outer field's default)."""
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        origin, _ = _unwrap(hints[f.name])
        if dataclasses.is_dataclass(origin) and isinstance(f.metadata.get("flatten"), str):
            inner = {k[len(f.name) + 1 :]: v for k, v in values.items() if k.startswith(f.name + ".")}
            if inner:
                outer_default = getattr(cls() if defaults is None else defaults, f.name)
                kwargs[f.name] = build_config(origin, inner, outer_default)
        elif f.name in values:
            value = values[f.name]
            kwargs[f.name] = tuple(value) if origin is tuple else value
    return cls(**kwargs) if defaults is None else dataclasses.replace(defaults, **kwargs)


def config_parser(cls: type, description: str | None = None, epilog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description, epilog=epilog, formatter_class=_Compact)
    _add_fields(parser, cls)
    return parser


def parse_config(cls: type[T], argv: list[str] | None = None, description: str | None = None,
                 epilog: str | None = None) -> T:
    """`cls` with the fields given on the command line (the others keep their defaults); bad values exit with usage."""
    parser = config_parser(cls, description, epilog)
    values = vars(parser.parse_args(argv))
    try:
        return build_config(cls, values)
    except (TypeError, ValueError) as e:
        parser.error(str(e))


def warnings_once(name: str) -> Callable[..., None]:
    """A `warnings.showwarning` that prints each distinct warning once, as one line `NAME: warning: MESSAGE`.

    Libraries warn per call (a left-out attribute, once per direction kind fitted); a script's reader needs each
    message once, not once per call site.
    """
    seen: set[tuple[type, str]] = set()

    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int, file: Any = None,
             line: str | None = None) -> None:
        if (category, str(message)) not in seen:
            seen.add((category, str(message)))
            print(f"{name}: warning: {message}", file=file or sys.stderr)

    return show


def run_script(name: str, main: Callable[[T], Any], config: T) -> Any:
    """Call `main(config)`; a user error (missing file, bad value) ends the process with one line, not a traceback;
    each distinct warning is shown once, as one line (`warnings_once`).

    Set LATENT_EDIT_TRACEBACK=1 to see the traceback.
    """
    with warnings.catch_warnings():
        warnings.showwarning = warnings_once(name)
        try:
            return main(config)
        except USER_ERRORS as e:
            if os.environ.get("LATENT_EDIT_TRACEBACK"):
                raise
            message = e.args[0] if isinstance(e, KeyError) and e.args else e
            sys.exit(f"{name}: {message}")
