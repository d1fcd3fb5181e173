"""Writes dropwarden(1) in roff from the click command tree (run by build.py with the package's own venv)."""

from __future__ import annotations

import datetime
import inspect
import sys

import click

from dropwarden import __version__
from dropwarden.cli import build_cli


def _roff(text: str) -> str:
    """Escape text for roff: backslashes, leading dots/quotes, hyphens meant as hyphens in options."""
    lines = []
    for line in text.replace("\\", "\\e").splitlines():
        if line.startswith((".", "'")):
            line = "\\&" + line
        lines.append(line)
    return "\n".join(lines)


def _paragraphs(text: str) -> list[str]:
    """A docstring as roff paragraphs; a click "\\b" paragraph keeps its line breaks."""
    out: list[str] = []
    for block in inspect.cleandoc(text).split("\n\n"):
        if block.startswith("\b\n"):
            out += [".PP", ".nf", _roff(block[2:]), ".fi"]
        elif block.strip():
            out += [".PP", _roff(" ".join(line.strip() for line in block.splitlines()))]
    return out


def _option_lines(ctx: click.Context, command: click.Command) -> list[str]:
    out = []
    for param in command.get_params(ctx):
        record = param.get_help_record(ctx)
        if record is None:
            continue
        names, help_text = record
        out += [".TP", "\\fB" + _roff(names).replace("-", "\\-") + "\\fR", _roff(help_text or "")]
    return out


def _command_section(ctx: click.Context, command: click.Command, path: list[str]) -> list[str]:
    """One .SS per command that does something, in the order of the tree."""
    out: list[str] = []
    sub_ctx = click.Context(command, info_name=path[-1], parent=ctx)
    if isinstance(command, click.Group):
        for name in command.list_commands(sub_ctx):
            child = command.get_command(sub_ctx, name)
            if child is not None and not child.hidden:
                out += _command_section(sub_ctx, child, [*path, name])
        return out
    usage = " ".join(command.collect_usage_pieces(sub_ctx))
    out += [".SS " + " ".join(path[1:]), "\\fB" + " ".join(path) + "\\fR " + _roff(usage).replace("-", "\\-")]
    out += _paragraphs(command.help or command.short_help or "")
    out += _option_lines(sub_ctx, command)
    return out


def manpage(date: datetime.date) -> str:
    cli = build_cli()
    ctx = click.Context(cli, info_name="dropwarden")
    lines = [
        f'.TH DROPWARDEN 1 "{date.isoformat()}" "dropwarden {__version__}" "User Commands"',
        ".SH NAME",
        "dropwarden \\- judge every file that lands in a drop folder",
        ".SH SYNOPSIS",
        "\\fBdropwarden\\fR [\\fIOPTIONS\\fR] \\fICOMMAND\\fR [\\fIARGS\\fR]...",
        ".SH DESCRIPTION",
        _roff(cli.help or ""),
        ".PP",
        "The service (dropwarden.service) runs \\fBdropwarden run\\fR on /etc/dropwarden/dropwarden.toml,",
        "the reference configuration with every setting documented. It starts once a [[watch]] is",
        "configured, e.g. with \\fBdropwarden config init \\-\\-force \\-\\-watch\\fR \\fIDIR\\fR.",
        ".SH OPTIONS",
        *_option_lines(ctx, cli),
        ".SH COMMANDS",
    ]
    for name in cli.list_commands(ctx):
        child = cli.get_command(ctx, name)
        if child is not None and not child.hidden:
            lines += _command_section(ctx, child, ["dropwarden", name])
    lines += [
        ".SH FILES",
        ".TP",
        "/etc/dropwarden/dropwarden.toml, /etc/dropwarden/dropwarden.d/*.toml",
        "Configuration and drop-ins.",
        ".TP",
        "/var/lib/dropwarden",
        "State database and per-install keys (the audit log's checkpoint keys).",
        ".TP",
        "/var/log/dropwarden/audit.jsonl",
        "The hash-chained audit log (kept when the package is purged).",
        ".SH SEE ALSO",
        "\\fBsystemctl\\fR(1), \\fBjournalctl\\fR(1), \\fBsystemd-sysusers\\fR(8), \\fBlogrotate\\fR(8)",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    epoch = int(sys.argv[1]) if len(sys.argv) > 1 else None
    day = datetime.datetime.fromtimestamp(epoch, datetime.UTC).date() if epoch else datetime.date.today()
    sys.stdout.write(manpage(day))
