"""How `--help` names values: in the words of a command line, not in Python's.

Typer 0.29 shows each option's Python type (`<bool>` beside a flag, `<str>`, `<list[Path]>`) and
writes required arguments as `{checkpoint_file}`. Here a flag shows no value, an option the kind of
value it takes (TEXT, INTEGER, NUMBER, PATH, as click names them), and an argument its name in
capitals (CHECKPOINT_FILE, FILES...), in the usage line as in the table. An explicit `metavar=` on an
option is kept.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

_KINDS: dict[Any, str] = {int: "INTEGER", float: "NUMBER", str: "TEXT"}


def _value_name(param: TyperOption | TyperArgument) -> str:
    descriptor = param.type_descriptor
    annotation = descriptor.annotation
    if descriptor.is_path or annotation is Path:  # a Path parsed by gpunet's own parser (outputs) too
        return "PATH"
    if descriptor.is_list:  # list[X]: the kind of one item
        annotation = getattr(annotation, "__args__", (None,))[0]
        return "PATH" if getattr(annotation, "__name__", "") == "Path" else _KINDS.get(annotation, "VALUE")
    return _KINDS.get(annotation, "VALUE")


def _named(params: list[Any]) -> list[Any]:
    """The same parameters, each with a metavar a user reads (set once; idempotent)."""
    for param in params:
        if getattr(param, "_gpunet_named", False):
            continue
        param._gpunet_named = True
        if isinstance(param, TyperOption) and param.metavar is None:
            param.metavar = "" if param.is_flag else _value_name(param)
        elif isinstance(param, TyperArgument):
            if param.metavar is None:
                param.metavar = param.name.upper() + ("..." if param.nargs != 1 else "")
            kind = _value_name(param) + ("..." if param.nargs != 1 else "")
            # The table's type column asks the argument itself, which ignores the metavar.
            param.display_type_rich = lambda ctx, kind=kind: kind  # type: ignore[method-assign, misc]
    return params


class Command(TyperCommand):
    """A command whose help and usage line name values as a command line does."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _named(super().get_params(ctx))

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if isinstance(param, TyperArgument) and param.metavar is not None:  # _named gave each one
                pieces.append(param.metavar if param.required else f"[{param.metavar}]")
        return pieces


class Group(TyperGroup):
    """A group of commands whose own options (--version, --help) are named as Command's are."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _named(super().get_params(ctx))


class Typer(typer.Typer):
    """typer.Typer whose commands are Commands unless told otherwise."""

    def command(self, *args: Any, cls: type[TyperCommand] | None = None, **kwargs: Any) -> Any:
        return super().command(*args, cls=cls or Command, **kwargs)
