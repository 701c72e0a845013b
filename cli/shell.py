"""How the `parley` command behaves as a whole: the click classes every command is built with.

- ``--json`` is accepted before the command and after it (``parley --json status``, ``parley status
  --json``, ``parley tenants list --json``): every command gets the flag.
- Help: ``parley --help`` lists the commands grouped by task (set up, knowledge, channels, operate),
  each with its full summary and an example; every command's own ``--help`` ends with its example.
  A command says where it belongs and how it is used: ``@main.command(section="knowledge",
  example="parley ingest ./docs --tenant acme")``.
- Errors: the root group's guard turns every error into one line on stderr and a non-zero exit:
  a `ParleyError` or invalid input says what is wrong (exit 1; 3 when the tenant's plan refused
  it, `QuotaExceeded`); an unexpected error gets an id,
  and its traceback goes to ``<data dir>/logs/cli-errors.log`` (or to the terminal with
  ``--debug``), never into the normal output. Click's own usage errors stay click's (exit 2).
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import traceback
import uuid
from pathlib import Path
from typing import Any

import click
from rich.console import Console

JSON_KEY = "parley.json"
#: The exit code of a command refused by the tenant's plan (`QuotaExceeded`): a script can tell
#: "over the plan" (remove something, or raise the limit) from any other error (1) and usage (2).
QUOTA_EXIT = 3
DEBUG_KEY = "parley.debug"

#: The task groups of ``parley --help``, in order: section key -> heading.
SECTIONS: dict[str, str] = {
    "setup": "Set up",
    "knowledge": "Knowledge",
    "channels": "Channels",
    "operate": "Operate",
}

_err = Console(stderr=True, soft_wrap=True)
#: Longest error message printed; the rest is cut (a 100 KB input echoed back is no help).
_MAX_MESSAGE = 600


def _json_flag(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        ctx.meta[JSON_KEY] = True  # meta is shared by the whole context chain
        if hasattr(ctx.obj, "as_json"):
            ctx.obj.as_json = True


def wants_json(ctx: click.Context) -> bool:
    return bool(ctx.meta.get(JSON_KEY))


def _json_param() -> click.Option:
    return click.Option(["--json"], is_flag=True, expose_value=False, callback=_json_flag,
                        help="Print machine-readable JSON instead of tables (before or after the command).")


class _Parley:
    """What every Parley command and group has: ``--json``, its task ``section`` and an ``example``
    that ends its help."""

    def __init__(self, *args: Any, section: str | None = None, example: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[call-arg]
        self.section, self.example = section, example
        self.params.append(_json_param())  # type: ignore[attr-defined]

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        super().format_epilog(ctx, formatter)  # type: ignore[misc]
        if self.example:
            with formatter.section("Example"):
                for line in self.example.splitlines():
                    formatter.write_text(line)


class ParleyCommand(_Parley, click.Command):
    """A command of `parley`."""


class ParleyGroup(_Parley, click.Group):
    """A group of commands (``parley tenants …``) whose commands and sub-groups are Parley's too;
    its help lists each command with its whole summary and example."""

    command_class = ParleyCommand
    group_class = type  # sub-groups are of this same class

    def _rows(self, ctx: click.Context, names: list[str], formatter: click.HelpFormatter) -> list[tuple[str, str]]:
        rows: list[tuple[str, str]] = []
        for name in names:
            command = self.get_command(ctx, name)
            if command is None or command.hidden:
                continue
            rows.append((name, command.get_short_help_str(limit=1000)))
            example = getattr(command, "example", None)
            if example:
                rows.append(("", "e.g. " + example.splitlines()[0]))
        return rows

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = self._rows(ctx, self.list_commands(ctx), formatter)
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


class ParleyRoot(ParleyGroup):
    """The `parley` group: commands grouped by task in its help, and the error guard."""

    group_class = ParleyGroup

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        names = [n for n in self.list_commands(ctx) if (c := self.get_command(ctx, n)) is not None and not c.hidden]
        by_section: dict[str, list[str]] = {}
        for name in names:
            section = getattr(self.get_command(ctx, name), "section", None)
            by_section.setdefault(section if section in SECTIONS else "other", []).append(name)
        for key, heading in [*SECTIONS.items(), ("other", "Other")]:
            if by_section.get(key):
                with formatter.section(heading):
                    formatter.write_dl(self._rows(ctx, by_section[key], formatter))

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as exc:  # noqa: BLE001 - the edge: every error becomes one line and an exit code
            sys.exit(report_error(exc, ctx))


def one_line(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 1] + "…"


def describe_error(exc: BaseException) -> str | None:
    """The one line for an error a person can act on, or None for an unexpected one."""
    import pydantic
    import sqlalchemy.exc

    from parley.errors import ParleyError

    if isinstance(exc, ParleyError):
        return exc.message
    if isinstance(exc, pydantic.ValidationError):
        problems = [f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}" for e in exc.errors()[:3]]
        return "invalid input: " + "; ".join(problems)
    if isinstance(exc, (ConnectionError, TimeoutError)) or (isinstance(exc, OSError) and exc.filename is None):
        return f"cannot reach a service: {exc or type(exc).__name__}"
    if isinstance(exc, OSError):
        return f"cannot use {exc.filename}: {exc.strerror or exc}"
    if isinstance(exc, sqlalchemy.exc.OperationalError):
        return f"the database refused the command: {exc.orig or exc}"
    return None


def report_error(exc: BaseException, ctx: click.Context | None = None) -> int:
    """Print ``exc`` as one line on stderr and return the exit code (see the module)."""
    debug = bool(ctx is not None and ctx.meta.get(DEBUG_KEY))
    message = describe_error(exc)
    if message is not None:
        if debug:
            traceback.print_exception(exc)
        _err.print(f"[red]error:[/red] {one_line(message)}", highlight=False, markup=True)
        return QUOTA_EXIT if getattr(exc, "code", None) == "quota_exceeded" else 1
    eid = uuid.uuid4().hex[:12]
    saved = _save_traceback(eid, exc, ctx)
    if debug:
        traceback.print_exception(exc)
    where = f"the traceback is in {saved}" if saved else "run again with --debug for the traceback"
    _err.print(f"[red]unexpected error {eid}:[/red] {one_line(f'{type(exc).__name__}: {exc}')} ({where})",
               highlight=False)
    return 1


def _save_traceback(eid: str, exc: BaseException, ctx: click.Context | None) -> Path | None:
    settings = getattr(ctx.obj, "settings", None) if ctx is not None else None
    if settings is None:
        return None
    try:
        folder = Path(settings.data_dir) / "logs"
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = folder / "cli-errors.log"
        stamp = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        text = "".join(traceback.format_exception(exc))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a", encoding="utf-8") as f:
            f.write(f"--- {stamp} error {eid} in `{ctx.command_path if ctx else 'parley'} {ctx.invoked_subcommand or ''}`\n"
                    f"{text}\n")  # not the arguments: they may hold a token
        return path
    except OSError:
        return None


def debug_flag(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        ctx.meta[DEBUG_KEY] = True
