"""`vera` commands as tests run them: in the test's own process where a command needs no process of its own (a `vera
ls`, a `vera org add`: 0.3-0.6 s of CPU each for python and the CLI's imports in a subprocess, ~400 of them in the
suite), in a subprocess of the installed console script where it does (servers, workers, training: signals, threads,
logging set-up, torch's state). Both give what ``subprocess.run(..., capture_output=True, text=True)`` gives: exit
code, stdout and stderr apart. tests/registry/test_cli.py runs the console script itself for every command it tests.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import subprocess
import sys
import threading
import traceback
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from typer._click import formatting, termui  # Typer's own Click (0.26 on): the modules its runner patches
from typer.testing import CliRunner

if TYPE_CHECKING:
    from rich.console import Console

VERA = Path(sys.executable).parent / "vera"
#: How to run `vera` in a subprocess: its console script, or the module where the project is not installed (on
#: PYTHONPATH, as bench/gpu_check.sh --offline runs it on a machine where nothing can be installed).
VERA_COMMAND = [str(VERA)] if VERA.exists() else [sys.executable, "-m", "registry.cli"]
#: The commands that run in a subprocess: they serve, train or work until stopped, start processes, set up logging or
#: signal handlers, or change this process's environment (`vera eval run` sets OPENAI_API_KEY).
IN_A_PROCESS = frozenset({"serve", "serve-model", "ui", "up", "cluster", "worker", "train", "eval"})


def vera(args: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: Path | str | None = None,
         input: str | None = None, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """Run `vera ARGS` with the environment ``env`` (all of it, as subprocess.run takes it; this process's when
    None), in ``cwd``, ``input`` on its stdin; what it did, as subprocess.run answers. ``timeout`` bounds a
    subprocess (a hang); a command in this process has none."""
    args = [str(arg) for arg in args]
    if not args or args[0] in IN_A_PROCESS:
        return subprocess.run([*VERA_COMMAND, *args], capture_output=True, text=True, timeout=timeout, check=False,
                              env=None if env is None else dict(env), cwd=cwd, input=input)
    return _in_this_process(args, dict(os.environ if env is None else env), cwd, input)


def _in_this_process(args: list[str], env: dict[str, str], cwd: Path | str | None,
                     input: str | None) -> subprocess.CompletedProcess[str]:
    """`vera ARGS` as the console script runs it (registry.cli.main: the app of the commands ARGS name), with Typer's
    runner for stdin, stdout and stderr, this process's environment replaced by ``env`` meanwhile. As in a process
    of its own: a Python warning is printed, not raised (pytest makes warnings errors); an exception the CLI does
    not catch is a traceback on stderr and exit code 1; the database connections it opened are closed when it ends
    (the admin commands leave them to the process's exit: left open here, each warned when collected, in a later
    test)."""
    from registry.cli import build, named
    from registry.cli.common import console, err_console

    changes: dict[str, str | None] = {**{name: None for name in os.environ if name not in env}, **env}
    width = env.get("COLUMNS", "")
    with contextlib.chdir(cwd or os.getcwd()), warnings.catch_warnings(), _console_width(
            [console, err_console], int(width) if width.isdigit() else 80), _closing_its_connections():
        warnings.resetwarnings()  # Python's defaults, as in a new process
        for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
            warnings.simplefilter("ignore", category)
        warnings.showwarning = _show_warning  # on stderr (pytest's recorder took them), until catch_warnings ends
        result = _Runner().invoke(build(named(args)), args, input=input, env=changes, prog_name="vera",
                                  catch_exceptions=True)
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        stderr += "".join(traceback.format_exception(result.exception))
    return subprocess.CompletedProcess(["vera", *args], result.exit_code, result.stdout, stderr)


class _Runner(CliRunner):
    """Typer's runner (Click's), with four things as a process has them: stdin read as it is (the runner's turned
    "\r\n" into "\n"), the answer to a prompt not written after it (a process's stdout holds "...? [y/N]: " and what
    it printed next; the runner writes "y\n" between), help as wide as COLUMNS says (the runner forces 80), and a
    warning logged where no handler is set up on stderr (Python's last resort: pytest's handlers take it otherwise).
    The runner changes process-wide state (streams, environment, the root logger): another thread of the test
    process (an in_thread server) sees it while a command runs."""

    @contextlib.contextmanager
    def isolation(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
        with super().isolation(*args, **kwargs) as streams:
            translating = sys.stdin  # kept: its collection would close the input under the new reader
            sys.stdin = io.TextIOWrapper(translating.buffer, encoding=translating.encoding, newline="\n")
            # the runner's isolation restores these at its end
            termui.visible_prompt_func = _prompt
            formatting.FORCED_WIDTH = None  # help as wide as COLUMNS says (the runner forces 80)
            last_resort = _ToStderr(logging.WARNING)
            logging.getLogger().addHandler(last_resort)
            try:
                yield streams
            finally:
                logging.getLogger().removeHandler(last_resort)


def _prompt(prompt: str | None = None) -> str:
    """input() on a pipe: the prompt on stdout, a line from stdin without its newline, EOFError at its end."""
    sys.stdout.write(prompt or "")
    sys.stdout.flush()
    line = sys.stdin.readline()
    if not line:
        raise EOFError
    return line.removesuffix("\n")


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: TextIO | None = None, line: str | None = None) -> None:
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


class _ToStderr(logging.Handler):
    """Each record's message on the sys.stderr of the moment (the runner's), as logging.lastResort writes it."""

    def emit(self, record: logging.LogRecord) -> None:
        sys.stderr.write(self.format(record) + "\n")


@contextlib.contextmanager
def _closing_its_connections() -> Iterator[None]:
    """Close the database connections that this thread opens in the block (SQLAlchemy's pools' new connections; a
    server in another thread of this process keeps its own)."""
    from sqlalchemy import event
    from sqlalchemy.pool import Pool

    opened: list[Any] = []
    thread = threading.get_ident()

    def record(connection: Any, _record: object) -> None:
        if threading.get_ident() == thread:
            opened.append(connection)

    event.listen(Pool, "connect", record)
    try:
        yield
    finally:
        event.remove(Pool, "connect", record)
        for connection in opened:
            connection.close()


@contextlib.contextmanager
def _console_width(consoles: list[Console], width: int) -> Iterator[None]:
    """The CLI's consoles (made once, when registry.cli.common was imported: on a terminal under `pytest -s`) as a
    new process's with its output on a pipe: as wide as COLUMNS, or 80, and without colours."""
    before = [(console._width, console._color_system) for console in consoles]
    for console in consoles:
        console._width, console._color_system = width, None
    try:
        yield
    finally:
        for console, (was, colours) in zip(consoles, before, strict=True):
            console._width, console._color_system = was, colours


def wide_vera(*args: str) -> subprocess.CompletedProcess[str]:
    """`vera ARGS` (``vera``) in this process's environment and a 200-column terminal."""
    return vera(args, env={**os.environ, "COLUMNS": "200"})
