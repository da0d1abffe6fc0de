"""Command-line options made from config fields: `--batch-size` is TrainConfig.batch_size.

Each field's type, range, default and help are written once, in its config; the options, their
parsing and the one-line errors of a mistyped option (with a "did you mean") are made here.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from dataclasses import fields
from typing import Any

from minigpt.config import describe, field_default, field_type


def option_name(name: str) -> str:
    """The command-line spelling of a config field: learning_rate -> --learning-rate."""
    return "--" + name.replace("_", "-")


def parser_for(kind: type):
    """Turn the option's text into a value of the field's type, or say what was expected."""
    def parse(text: str):
        try:
            return kind(text)
        except ValueError:
            noun = "a whole number" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"must be {noun}, got {text!r}") from None
    return parse


def add_config_options(group, config_class) -> None:
    """One option per field of `config_class`; default None means "not given" (see `given`)."""
    for f in fields(config_class):
        if not f.metadata.get("option", True):
            continue
        kind = field_type(config_class, f)[0]
        says_allowed = kind in (int, float) or f.metadata.get("allowed")  # argparse lists choices
        allowed = f"; {describe(config_class, f).removesuffix(' (or None)')}" if says_allowed else ""
        default = "not set" if field_default(f) is None else field_default(f)
        help_text = f"{f.metadata['help']}{allowed} [default: {default}]"
        if kind is bool:
            group.add_argument(option_name(f.name), action=argparse.BooleanOptionalAction,
                               default=None, help=help_text)
        else:
            group.add_argument(option_name(f.name), default=None, help=help_text,
                               type=str if kind is str else parser_for(kind),
                               choices=f.metadata.get("choices"))


def option_names(config_class) -> list[str]:
    return [f.name for f in fields(config_class) if f.metadata.get("option", True)]


def given(args: argparse.Namespace, config_class) -> dict[str, Any]:
    """The options of `config_class` that the user actually gave."""
    return {n: getattr(args, n) for n in option_names(config_class) if getattr(args, n, None) is not None}


class Parser(argparse.ArgumentParser):
    def parse_args(self, args=None, namespace=None):
        self.typed = list(sys.argv[1:] if args is None else args)
        return super().parse_args(self.typed, namespace)

    def error(self, message: str) -> None:
        """One line, like every other error of the command; a mistyped option gets a suggestion."""
        if "unrecognized arguments: " in message:
            typed = message.split("unrecognized arguments: ", 1)[1].split()[0].split("=")[0]
            close = difflib.get_close_matches(typed.replace("_", "-"), self._known_options(), n=1)
            if close:
                message += f"; did you mean {close[0]}?"
        self.exit(2, f"minigpt: error: {message} (see '{self.prog} --help')\n")

    def _known_options(self) -> list[str]:
        """The options of the command typed (`minigpt train ...`: train's)."""
        commands = next(a.choices for a in self._actions if isinstance(a, argparse._SubParsersAction))
        chosen = [commands[t] for t in getattr(self, "typed", []) if t in commands][:1]
        return [o for p in [self, *chosen] for a in p._actions for o in a.option_strings]
