"""MkDocs hook that writes the configuration and CLI references from the code at build time.

A page containing `<!-- neuroude:config-reference -->` gets one table per
section of `RunConfig`, read from the pydantic schema, and a page containing
`<!-- neuroude:cli-reference -->` gets every `neuroude` command with its
arguments, read from the argparse parser. Neither reference can drift from
the code, because neither is written by hand.
"""

from __future__ import annotations

import argparse
import types
import typing

import annotated_types
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from neuroude.cli import _parser
from neuroude.config import RunConfig

CONFIG_MARKER = "<!-- neuroude:config-reference -->"
CLI_MARKER = "<!-- neuroude:cli-reference -->"

BOUNDS = ((annotated_types.Gt, ">"), (annotated_types.Ge, ">="), (annotated_types.Lt, "<"), (annotated_types.Le, "<="))


def on_page_markdown(markdown: str, page, config, files) -> str:
    if CONFIG_MARKER in markdown:
        markdown = markdown.replace(CONFIG_MARKER, config_reference())
    if CLI_MARKER in markdown:
        markdown = markdown.replace(CLI_MARKER, cli_reference())
    return markdown


# -- configuration -----------------------------------------------------------


def _section_class(annotation) -> type[BaseModel] | None:
    """Return the pydantic section class of a field (also through `X | None` and `list[X]`), or None for a plain value."""
    origin = typing.get_origin(annotation)
    candidates = typing.get_args(annotation) if origin in (typing.Union, types.UnionType, list) else (annotation,)
    for candidate in candidates:
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def type_text(annotation) -> str:
    """Write a field's type in words: `int`, `float or None`, `one of "a", "b"`, `list of int`."""
    origin = typing.get_origin(annotation)
    arguments = typing.get_args(annotation)
    if origin is typing.Literal:
        return "one of " + ", ".join(f'`"{value}"`' if isinstance(value, str) else f"`{value}`" for value in arguments)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_text(argument) for argument in arguments)
    if origin in (list, tuple):
        if origin is tuple and len(arguments) > 1 and Ellipsis not in arguments:
            return f"{len(arguments)} × {type_text(arguments[0])}"
        return f"list of {type_text(arguments[0])}"
    if origin is dict:
        return f"mapping of {type_text(arguments[0])} to {type_text(arguments[1])}"
    if annotation is type(None):
        return "None"
    return getattr(annotation, "__name__", str(annotation))


def _bounds_text(field) -> str:
    parts = []
    for constraint in field.metadata:
        for kind, symbol in BOUNDS:
            if isinstance(constraint, kind):
                # annotated_types stores the bound in an attribute named like the class: Gt(gt=0).
                parts.append(f"{symbol} {getattr(constraint, kind.__name__.lower())}")
    return ", ".join(parts)


def _default_text(field) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
        return "(section)" if isinstance(value, BaseModel) else f"`{value!r}`"
    if field.default is PydanticUndefined:
        return "required"
    if isinstance(field.default, tuple):
        return f"`{list(field.default)}`"
    return f"`{field.default!r}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _section_table(prefix: str, section: type[BaseModel], heading_level: int) -> list[str]:
    lines = [f"{'#' * heading_level} `{prefix or 'top level'}`", ""]
    doc = (section.__doc__ or "").strip()
    if doc and section is not RunConfig:
        lines += [doc.splitlines()[0], ""]
    lines += ["| key | type | default | constraint | description |", "|---|---|---|---|---|"]
    nested = []
    for name, field in section.model_fields.items():
        key = f"{prefix}.{name}" if prefix else name
        child = _section_class(field.annotation)
        if child is not None:
            nested.append((key, child))
        description = field.description or ("see the section below" if child is not None else "")
        lines.append(
            f"| `{key}` | {_cell(type_text(field.annotation))} | {_cell(_default_text(field))} | "
            f"{_bounds_text(field)} | {_cell(description)} |"
        )
    lines.append("")
    for key, child in nested:
        lines += _section_table(key, child, heading_level + (1 if "." in key else 0))
    return lines


def config_reference() -> str:
    """Return Markdown tables of every `RunConfig` key with its type, default, constraint and description."""
    return "\n".join(_section_table("", RunConfig, 2))


# -- command line --------------------------------------------------------------


def _argument_row(action: argparse.Action) -> str:
    name = ", ".join(f"`{option}`" for option in action.option_strings) or f"`{action.dest}`"
    if action.choices:
        name += " {" + ", ".join(str(choice) for choice in action.choices) + "}"
    # Flags default to False and optional values to None; neither is worth a cell.
    shown_default = action.option_strings and action.default is not None and action.default is not False \
        and action.default != argparse.SUPPRESS
    default = f"`{action.default}`" if shown_default else ""
    return f"| {name} | {_cell(action.help or '')} | {default} |"


def _parser_section(title: str, parser: argparse.ArgumentParser, help_text: str) -> list[str]:
    lines = [f"## `{title}`", ""]
    if help_text:
        lines += [help_text[0].upper() + help_text[1:].rstrip(".") + ".", ""]
    lines += ["```", parser.format_usage().strip(), "```", ""]
    rows = [_argument_row(action) for action in parser._actions
            if not isinstance(action, (argparse._HelpAction, argparse._SubParsersAction))]
    if rows:
        lines += ["| argument | meaning | default |", "|---|---|---|", *rows, ""]
    return lines


def _command_sections(title: str, parser: argparse.ArgumentParser) -> list[str]:
    """Return the sections of each command of `parser` and, in turn, of their own commands (`neuroude data inspect`)."""
    lines = []
    for commands in parser._actions:
        if not isinstance(commands, argparse._SubParsersAction):
            continue
        helps = {choice.dest: choice.help for choice in commands._choices_actions}
        for name, subparser in commands.choices.items():
            lines += _parser_section(f"{title} {name}", subparser, helps.get(name) or "")
            lines += _command_sections(f"{title} {name}", subparser)
    return lines


def cli_reference() -> str:
    """Return Markdown with the usage and arguments of `neuroude` and of each of its commands."""
    parser = _parser()
    lines = _parser_section("neuroude", parser, parser.description or "")
    return "\n".join(lines + _command_sections("neuroude", parser))
