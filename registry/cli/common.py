"""What every `vera` command shares: the consoles, the one error-reporting path, the registry and storage options,
settings, and the runner of registry client calls."""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Iterable
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.segment import Segment
from rich.text import Text

from registry.client import RegistryClient
from registry.domain.errors import InvalidInput, RegistryError, damaged_sqlite
from registry.domain.schemas import (
    LINE_AND_BIDI_CONTROLS,
    check_params,
    check_properties,
    json_object,
    parse_properties,
)
from registry.logs import first_line
from vera_core import VeraError

if TYPE_CHECKING:
    from registry.settings import Settings  # imported when used: the commands that talk HTTP never load settings
    from vera_core.lora_options import LoraExport

# No console markup: what is printed holds names, descriptions, filters and messages that echo them, and a caller's
# "[/x]" (`vera show 'a/b[/x]'`) raised rich's MarkupError, a traceback instead of the error, while "[bold]" in a
# description was swallowed. Styles are given as Text (``styled``), never parsed out of strings.
#: Control characters (but newline and tab) and the bidirectional overrides, as the escapes that show them.
_SHOWN = {c: f"\\x{c:02x}" for c in [*range(0x20), 0x7F, *range(0x80, 0xA0)] if chr(c) not in "\n\t"} | {
    ord(c): f"\\u{ord(c):04x}" for c in LINE_AND_BIDI_CONTROLS}


class PlainConsole(Console):
    """A console that prints control characters and bidirectional overrides in what it is given as escapes (``\x1b``),
    so a terminal never runs them: what is printed holds what callers of a registry wrote (names, texts, what a Hub
    answered), and the registry refuses such characters as it stores them, but not in rows stored before it did (an
    escape sequence in a layer name cleared the screen of whoever compared the version: session 39). Its own styles
    are not text, and pass."""

    def _render_buffer(self, buffer: Iterable[Segment]) -> str:
        return super()._render_buffer(segment if segment.control else Segment(
            segment.text.translate(_SHOWN), segment.style, segment.control) for segment in buffer)


console = PlainConsole(markup=False)
err_console = PlainConsole(stderr=True, markup=False)


def shown(text: str) -> str:
    """``text`` with its control characters (but newline and tab) and bidirectional overrides as the escapes that
    show them, as every table and line of ``console`` prints them: for text printed whole, not through rich."""
    return text.translate(_SHOWN)


def styled(label: str, style: str, rest: str = "") -> Text:
    """``label`` in ``style``, then ``rest`` as it is: ``styled("error:", "bold red", " a message")``."""
    return Text.assemble((label, style), rest)

P = ParamSpec("P")
T = TypeVar("T")


class ExitCode(IntEnum):
    """What `vera` exits with (docs/api.md); 2 is Click's, for usage errors, and nothing else uses it."""

    OK = 0
    ERROR = 1  # the command could not do what was asked; one line on stderr says why
    USAGE = 2  # wrong options or arguments (Click)
    CHECK_FAILED = 3  # a check ran and found a problem: verify, fsck, inspect --verify, db status, job logs --follow,
    # webhook test, resolve (a reference naming no version)


def fail(exc: Exception, code: ExitCode = ExitCode.ERROR) -> NoReturn:
    """Report ``exc`` as one line on stderr (unbroken: logs, CI output and grep hold it whole; the terminal wraps it
    on screen) and exit with ``code`` (CHECK_FAILED where what was asked was done and found a problem)."""
    err_console.print(styled("error:", "bold red", f" {exc}"), soft_wrap=True)
    raise typer.Exit(code=code)


def key_values(pairs: list[str], noun: str = "Property", example: str = "validation=passed") -> dict[str, str]:
    """``["validation=passed", "ticket=ML-42"]`` as a dict (registry.domain.schemas.parse_properties: as the
    dashboard reads them); a pair without '=' or key, a key given twice, or a key or value the registry refuses
    (check_properties, check_params for ``noun`` Parameter) fails saying each, before anything is sent."""
    check, given = (check_params, "the parameters given") if noun == "Parameter" else (check_properties,
                                                                                        "the properties given")
    try:
        return parse_properties(pairs, noun, example, check=lambda found: check(found, given))
    except InvalidInput as exc:
        fail(exc)


def check_failed() -> NoReturn:
    """Exit with ExitCode.CHECK_FAILED (the command has printed what the check found)."""
    raise typer.Exit(code=ExitCode.CHECK_FAILED)


def confirm_deletion(yes: bool, question: str, what: str) -> None:
    """Ask ``question`` (default no) unless ``yes``; anything but yes, or no answer (stdin closed), fails saying
    ``what`` was not deleted and how to skip the question (--yes)."""
    confirm(yes, question, f"{what} was not deleted; pass --yes to delete without asking")


def confirm(yes: bool, question: str, refused: str) -> None:
    """Ask ``question`` (default no) unless ``yes``; anything but yes, or no answer (stdin closed), fails saying
    ``refused`` (what was not done, and how to skip the question)."""
    if yes:
        return
    try:
        confirmed = typer.confirm(question, default=False)
    except typer.Abort:  # no answer (stdin closed)
        confirmed = False
    if not confirmed:
        fail(InvalidInput(f"{refused}."))


def reports_errors(command: Callable[P, T]) -> Callable[P, T]:
    """The command, with a registry or vera_core error, or the operating system's refusal (OSError), turned into
    one clear line on stderr and exit code 1 (no traceback). `registry.cli` wraps every command in it."""

    @functools.wraps(command)
    def reporting(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return command(*args, **kwargs)
        except (RegistryError, VeraError) as exc:
            fail(exc)
        except json.JSONDecodeError as exc:  # a server that is no vera registry answered 200 (a re-check, session 46)
            fail(RegistryError(f"An answer could not be read as JSON ({exc.msg} at character {exc.pos}): check that "
                               "the URL names a vera registry (--registry, VERA_REGISTRY_URL, --to-registry)."))
        except OSError as exc:  # the machine's answer (a full disk, a folder it may not write): no traceback
            where = f" ({exc.filename})" if exc.filename else ""
            fail(OSError(f"{exc.strerror or exc}{where}"))
        except Exception as exc:
            # the database refused or dropped the connection (sqlalchemy, not imported here: `vera ls` needs none)
            if type(exc).__module__ != "sqlalchemy.exc":
                raise
            if damaged_sqlite(exc):
                # a damaged file: a traceback before (an operator's walk, session 43)
                fail(RegistryError(f"The registry database is damaged: {first_line(exc)}. Stop the registry and "
                                   "restore the newest good backup (docs/guide.md, \"Back up and upgrade the "
                                   "registry\"); check the path if this is not the registry's database."))
            if type(exc).__name__ in ("OperationalError", "InterfaceError"):
                fail(RegistryError(f"Cannot use the registry database: {first_line(exc)}. Check VERA_DATABASE_URL (or "
                                   "--database-url), and that the database server is up and reachable."))
            raise

    return reporting


DatabaseUrl = Annotated[str | None, typer.Option("--database-url", envvar="VERA_DATABASE_URL",
                                                 help="SQLAlchemy URL; default: SQLite under VERA_DATA_DIR.")]
StorageUrl = Annotated[str | None, typer.Option("--storage-url", envvar="VERA_STORAGE_URL",
                                                help="fsspec URL or folder for blobs; default: VERA_DATA_DIR/blobs.")]
RegistryUrl = Annotated[str | None, typer.Option("--registry", envvar="VERA_REGISTRY_URL",
                                                 help="Registry URL; default http://127.0.0.1:8765.")]
Token = Annotated[str | None, typer.Option("--token", envvar="VERA_TOKEN", help="Bearer token.")]
VersionRef = Annotated[str, typer.Argument(help="owner/name[:VERSION|@ALIAS]")]
HubTokenOpt = Annotated[str | None, typer.Option("--hub-token", envvar="HF_TOKEN", show_default=False,
                                                 help="HuggingFace token for this call (default: HF_TOKEN, then the "
                                                 "server's VERA_HUB_TOKEN if your token has the hub scope); sent "
                                                 "once, never stored.")]


#: The unknown VERA_* variables this command has noted already.
_NOTED: set[str] = set()


def load_settings(database_url: str | None, storage_url: str | None = None, *, read_only: bool = False) -> Settings:
    """The registry settings, from these options and the environment (``read_only``: --read-only, which only turns
    VERA_READ_ONLY on); a refused value exits with its reason."""
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    from registry.settings import Settings, settings_problem, unknown_variables

    for variable in unknown_variables(os.environ):
        if variable not in _NOTED:  # once a command (`vera db status` loads the settings twice: said twice)
            _NOTED.add(variable)
            err_console.print(styled("note:", "yellow", f" {variable} is set but is no vera setting: it is ignored."),
                              soft_wrap=True)
    given: dict[str, Any] = {"database_url": database_url, "storage_url": storage_url,
                             "read_only": True if read_only else None}
    try:  # only the options given: an explicit None hides VERA_* variables in older pydantic-settings (2.3)
        return Settings(**{name: value for name, value in given.items() if value is not None})
    except ValidationError as exc:
        fail(InvalidInput(settings_problem(exc)))
    except SettingsError as exc:  # a list or object setting that is not JSON
        field = str(exc).partition('field "')[2].partition('"')[0]
        example = ("a JSON object, e.g. VERA_OWNER_QUOTAS='{\"acme\": \"50GB\", \"ci\": null}'"
                   if field == "owner_quotas" else
                   f"a JSON list, e.g. VERA_{field.upper()}='[\"minilm\", \"org/model\"]'")
        fail(InvalidInput(f"VERA_{field.upper()} is not JSON: give {example}. Fix it, or unset it for the default."))


def call_registry(url: str | None, token: str | None, fn: Callable[[RegistryClient], T]) -> T:
    """Run ``fn`` with a client of the registry at ``url`` (closed afterwards)."""
    with RegistryClient(url, token) as client:
        return fn(client)


MaxRank = Annotated[int | None, typer.Option(help="LoRA export: at most this rank per layer (the best approximation; "
                                          "the error per layer goes to the export's README.md). Default: r, exact.")]
LoraDtype = Annotated[str, typer.Option("--dtype", help="LoRA export: float32, bfloat16 or float16.")]
ForVllm = Annotated[bool, typer.Option("--for-vllm", help="LoRA export: at most rank 512, the most vLLM serves "
                                       "(exact up to it); says which --max-lora-rank serves it.")]


def lora_export(max_rank: int | None, dtype: str, for_vllm: bool) -> LoraExport:
    """The LoRA export options, checked (a bad value exits with the reason), without importing torch."""
    from vera_core.lora_options import LoraExport

    try:
        return LoraExport(max_rank=max_rank, dtype=dtype, for_vllm=for_vllm)
    except VeraError as exc:
        fail(exc)


def lora_summary(rank: object, adapter_r: int, export: LoraExport, *, with_readme: bool) -> str:
    """Which LoRA an export is, in words: exact (rank r), or an approximation, why (--max-rank, vLLM's cap) and where
    its errors are; for vLLM, the --max-lora-rank that serves it (`--for-vllm` said "exact" of a rank it had cut)."""
    from vera_core.lora_options import VLLM_MAX_RANK, vllm_max_lora_rank

    if not isinstance(rank, int) or rank >= adapter_r:
        said = f"LoRA, r = lora_alpha = {rank}, exact"
    else:
        cut = f"--max-rank {export.max_rank}" if export.max_rank is not None and export.max_rank <= rank else \
            f"{VLLM_MAX_RANK}, the most vLLM serves"
        said = (f"LoRA, r = lora_alpha = {rank} of the adapter's {adapter_r}: {cut}; the best rank-{rank} "
                "approximation" + ("; errors per layer in its README.md" if with_readme else ""))
    if export.for_vllm and isinstance(rank, int):
        said += f"; vLLM serves it started with --max-lora-rank {vllm_max_lora_rank(rank)} or more"
    return f" ({said})"


def warn_unservable_by_vllm(config: dict[str, Any]) -> None:
    """After a `--for-vllm` export: what in its adapter_config.json vLLM will not serve (a task head and the modules
    PEFT saves whole), said once (it wrote them silently: a newcomer's walk, session 40)."""
    saved = config.get("modules_to_save") or []
    task = config.get("task_type")
    if not saved and task in (None, "CAUSAL_LM"):
        return
    what = (f"a {task} adapter" if task not in (None, "CAUSAL_LM") else "an adapter") + (
        f" with modules_to_save {', '.join(map(str, saved))}" if saved else "")
    err_console.print(styled("warning:", "yellow", f" this is {what}: vLLM serves LoRAs of generative models and loads "
                             "neither a task head nor modules_to_save, so it would refuse or ignore them. Export an "
                             "adapter trained with --task causal-lm for vLLM."), soft_wrap=True)


def as_lora(choice: str) -> bool:
    """`--as`: True for lora, False for vera; anything else exits with the choices."""
    if choice not in ("vera", "lora"):
        fail(InvalidInput(f"--as must be vera or lora, got {choice!r}."))
    return choice == "lora"


ReadOnlyMode = Annotated[bool, typer.Option(
    "--read-only", help="Refuse every change (503 read_only) and write nothing, reads included: a replica on a "
    "database hot standby, a backup or migration window, a public mirror (VERA_READ_ONLY; VERA_PRIMARY_URL names where "
    "changes go). No job worker runs.")]


LogLevel = Annotated[str | None, typer.Option(
    help="debug, info, warning or error (default: VERA_LOG_LEVEL, else info). Log lines go to stderr, JSON unless "
         "it is a terminal (VERA_LOG_FORMAT=json|text|auto).")]


def start_logging(settings: Settings, level: str | None) -> Settings:
    """Configure registry.logs from --log-level (or the settings); the settings with that level, for children."""
    from registry import logs
    from registry.settings import Settings

    if level is not None:
        try:
            settings = settings.model_copy(update={"log_level": Settings.model_validate(
                {"log_level": level}).log_level})
        except ValueError as exc:
            fail(InvalidInput(f"--log-level {level!r}: use debug, info, warning or error ({exc.__class__.__name__})."))
    logs.configure(settings.log_level, settings.log_format)
    return settings


def read_json_object(path: Path, what: str) -> dict[str, object]:
    """A JSON object from a file the caller names, or InvalidInput saying what is wrong with it."""
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"{what} {path}: not a readable file ({exc}).") from exc
    return json_object(text, f"{what} {path}")
