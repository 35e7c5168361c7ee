"""Flags made from the settings' fields (aeopt/settings.py): a field cannot lack a flag, and a flag's
type, help and default come from the field itself."""
from __future__ import annotations

import argparse
import dataclasses
import inspect
import types
import typing
from pathlib import Path
from typing import Any

from ..errors import AeoptError
from ..settings import flat_names, read_yaml, setting_fields


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag on one line (with exit code 2), without the usage block."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _flag_type(hint: Any, field: dataclasses.Field):
    """The argparse type of a field: its `parse`, else the non-None member of its annotation."""
    if field.metadata.get("parse"):
        return field.metadata["parse"]
    args = [a for a in typing.get_args(hint) if a is not type(None)] if isinstance(hint, types.UnionType) or \
        typing.get_origin(hint) is typing.Union else [hint]
    kind = args[0] if args else str
    return None if kind is bool else kind


def add_setting_flags(parser: argparse.ArgumentParser, *, skip: tuple[str, ...] = ()) -> None:
    """One flag per settings field, grouped by section; defaults are None so a YAML file's values show."""
    groups: dict[str, Any] = {}
    for section, field, hint in setting_fields():
        if field.name in skip:
            continue
        if section not in groups:
            groups[section] = parser.add_argument_group(f"{section} settings (also YAML keys for --config)")
        flag = "--" + field.name.replace("_", "-")
        kind = _flag_type(hint, field)
        help_text = f"{field.metadata['help']} (default: {field.default})"
        if kind is None:
            groups[section].add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            groups[section].add_argument(flag, type=kind, default=None, help=help_text)


def settings_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Flat settings from --config, then overridden by every flag given on the command line."""
    values = read_yaml(args.config) if getattr(args, "config", None) else {}
    values = flat_names(values, args.config or "config")  # unknown keys are refused here
    for _, field, _ in setting_fields():
        given = getattr(args, field.name, None)
        if given is not None:
            values[field.name] = given
    return values


def defaults_of(function) -> dict[str, Any]:
    """A library function's keyword defaults: the CLI shows and uses these, so each default is written once,
    in the function the Python API calls."""
    return {name: p.default for name, p in inspect.signature(function).parameters.items()
            if p.default is not inspect.Parameter.empty}


def add_common_flags(parser: argparse.ArgumentParser, *, writes: bool = True) -> None:
    """--quiet, --debug (and --overwrite for commands that write): the flags every command shares."""
    parser.add_argument("--quiet", action="store_true", help="no progress bar or messages, only the result line")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    if writes:
        parser.add_argument("--overwrite", action="store_true", help="replace existing output")


def refuse_existing(path: str | Path, overwrite: bool) -> None:
    """The rule of every command that writes: an existing output is replaced only with --overwrite."""
    if Path(path).exists() and not overwrite:
        raise AeoptError(f"{path} already exists; pass --overwrite to replace it")


def quiet_log(message: str) -> None:
    """--quiet keeps warnings (they matter) and drops chatter."""
    import sys

    if message.lower().startswith("warning"):
        print(message, file=sys.stderr)
