"""How every command speaks and ends: one console, one-line errors on stderr, the exit codes."""

from __future__ import annotations

import json
import subprocess
from typing import NoReturn

import typer
from rich.console import Console

# a pipe or a file gets wide rows rather than rows wrapped at 80 columns
console = Console(width=None if Console().is_terminal else 200)

# Exit codes: 0 done, 1 a failure while running, 2 a wrong argument or input, 3 results that
# differ from the reference (check, export --check), 130 interrupted.
EXIT_FAILED, EXIT_USAGE, EXIT_DIFFERS, EXIT_INTERRUPTED = 1, 2, 3, 130


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """One plain line on stderr, no traceback, and the exit code."""
    typer.echo(f"error: {message}".replace("\n", " "), err=True)
    raise typer.Exit(code)


def build_failed(exc: subprocess.CalledProcessError, what: str) -> NoReturn:
    """Show the compiler's words (not a traceback) and fail."""
    output_text = (exc.stderr or b"").decode(errors="replace") + (exc.stdout or b"").decode(errors="replace")
    typer.echo(output_text.rstrip(), err=True)
    fail(f"building {what} failed ({' '.join(map(str, exc.cmd))} exited {exc.returncode})", EXIT_FAILED)


def print_json(rows: list[dict]) -> None:
    """``rows`` on stdout as one indented JSON list (the listings' ``--json``)."""
    typer.echo(json.dumps(rows, indent=1))
