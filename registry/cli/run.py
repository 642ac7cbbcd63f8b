"""Long-running processes and their supervision: the registry API (with a job worker for `vera up`), the model
server, the dashboard as a child process, and `vera up`, which runs them together."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import socket
import subprocess
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import typer

from registry.cli.common import LogLevel, ReadOnlyMode, RegistryUrl, console, fail, load_settings, start_logging
from registry.client import DEFAULT_URL, RegistryClient
from registry.domain.errors import InvalidInput, RegistryError
from registry.domain.words import counted
from registry.logs import first_line
from registry.settings import Settings, ui_remember_days

if TYPE_CHECKING:
    from registry.services.jobs import Jobs
    from registry.services.registry import Registry

log = logging.getLogger("vera")


def run_api(host: str, port: int, settings: Settings, *, with_worker: bool = False, workers: int = 1,
            log_level: str | None = None, worker_status_port: int | None = None, say_url: bool = False) -> None:
    """Serve the registry API on host:port until stopped; with ``with_worker``, a job worker in a thread beside it
    (none on a read-only registry: a worker publishes), its /health and /metrics on 127.0.0.1:``worker_status_port``
    when given (registry.worker_status); with ``workers`` > 1, that many API processes (uvicorn's
    supervisor), each building the app from the settings, which they receive as VERA_* variables, and writing its
    request counters where /metrics in any of them sums them (registry.api.metrics.multiprocess_directory).
    ``say_url``: log where other shells' `vera` finds it (`vera serve`: as a log line, so that JSON logs stay JSON;
    `vera up` prints it)."""
    import uvicorn

    if with_worker:
        _worker_can_run(settings, workers)
    settings = start_logging(settings, log_level)  # before the HF libraries load: they read their switches then

    from registry.api import is_loopback
    from registry.api.metrics import multiprocess_directory
    from registry.bootstrap import build_api, open_registry, server_options, tokens_decided

    served = server_options(host, port, settings)
    shared = settings.shared_backend
    settings = tokens_decided(settings, host)
    if settings.require_tokens:
        mode = "tokens required" + (" (anonymous read allowed)" if settings.anonymous_read else "")
        if settings.require_tokens and shared and is_loopback(host):
            mode += f" ({shared}: a shared registry; VERA_REQUIRE_TOKENS=false turns them off)"
    else:
        mode = "LOCAL MODE: no token needed, every caller acts as the single local user"
        if not is_loopback(host):
            log.warning(f"tokens are off on {host}, which is not loopback")
    if settings.read_only:
        mode += "; READ-ONLY: changes are refused" + (f" (they go to {settings.primary_url})"
                                                      if settings.primary_url else "") + ", reads write nothing"
        if with_worker:
            log.info("read-only: no job worker runs here (a worker publishes what it trains)")
            with_worker = False
    with multiprocess_directory(workers):  # before any process counts: made, or the operator's one cleared
        if workers > 1:
            registry = open_registry(settings, create_if_empty=True)  # the schema, once, before the processes start
            registry.db.engine.dispose()
        else:
            app, registry, jobs = build_api(settings)
        log.info(f"vera-registry on http://{host}:{port} - {mode}" + (f", {workers} processes" if workers > 1 else "")
                 + f"; database {registry.db.engine.url!r}, storage {registry.blobs.url}")
        _log_publishers(settings, registry)
        _log_where(host, port, say_url)
        _warn_of_team_data(settings, registry)
        if workers > 1:
            registry.db.engine.dispose()  # (the publishers' check may have opened a connection: not for the workers)
            os.environ.update(settings.environment())
            uvicorn.run("registry.bootstrap:api_from_environment", factory=True, workers=workers, **served)
            return  # uvicorn's supervisor returns once its processes have ended: the block removes the directory
        if with_worker:
            _start_worker(jobs, settings, worker_status_port)
        uvicorn.run(app, **served)
        registry.db.close()  # again: `vera up`'s worker thread may have used it after the app's own close


def _worker_can_run(settings: Settings, workers: int) -> None:
    """Refuse a worker beside the API that cannot run, before anything starts or is said (a lease its heartbeat
    cannot keep was refused after the start-up lines, naming a --heartbeat `vera up` does not have)."""
    from registry.worker import DEFAULT_HEARTBEAT_S, check_heartbeat

    if workers > 1:
        raise InvalidInput("A job worker runs beside one API process only; start workers with `vera worker`.")
    if not settings.read_only:  # (a read-only registry runs no worker)
        check_heartbeat(DEFAULT_HEARTBEAT_S, settings.job_lease_s, fixed=True)


def _warn_of_team_data(settings: Settings, registry: Registry) -> None:
    """Local mode over a registry a team used (live tokens, private adapters): everyone with a shell on this machine
    now reads and changes all of it as the local user. `vera up` restarted without --host turned tokens off with no
    word (a newcomer's walk, session 38); said once, at start-up."""
    from sqlalchemy import func, select

    from registry.services.tokens import live_token
    from registry.store import models as m

    if settings.require_tokens:
        return
    with registry.db.session() as s:
        tokens = s.scalar(select(func.count()).select_from(m.AccessToken).where(live_token(datetime.now(UTC)))) or 0
        private = s.scalar(select(func.count()).select_from(m.Adapter).where(m.Adapter.visibility == "private")) or 0
    if tokens or private:
        held = " and ".join(part for part in (counted(tokens, "live token") if tokens else "",
                                               counted(private, "private adapter") if private else "") if part)
        log.warning(f"tokens are off (local mode: loopback, embedded storage), but this registry holds {held}: every "
                    "user of this machine now reads and changes all of it as the local user. Start it with "
                    "VERA_REQUIRE_TOKENS=true (or --host 0.0.0.0, which requires them) to keep them in force.")


def _log_publishers(settings: Settings, registry: Registry) -> None:
    """The trusted publishers read from VERA_TRUSTED_PUBLISHERS: what an operator checks first when CI's exchange is
    refused; a warning for one whose user is an organisation's name (its tokens would act in that organisation's
    namespace as their own: organisations cannot take such a name once it is configured, but one may have before)."""
    if not settings.trusted_publishers:
        return
    organisations = {o.name for o in registry.access.organizations()}
    for publisher in settings.trusted_publishers:
        log.info(f"trusted publisher {publisher.name}: identity tokens of {publisher.issuer} for the audience "
                 f"{publisher.audience!r} with {json.dumps(publisher.claims)} become {publisher.minutes:g}-minute "
                 f"tokens of {publisher.user} ({', '.join(publisher.scopes)}) for {', '.join(publisher.owners)}")
        if publisher.user in organisations:
            log.warning(f"trusted publisher {publisher.name}: its user {publisher.user!r} is an organisation's name; "
                        "its tokens would write and read under that organisation as their own. Give it another "
                        "user in VERA_TRUSTED_PUBLISHERS.")


def _start_worker(jobs: Jobs, settings: Settings, status_port: int | None) -> None:
    """A job worker in a daemon thread of this process, its status served on 127.0.0.1:``status_port`` if given."""
    import threading

    from registry.worker import Worker

    runner = Worker(jobs, state_dir=settings.data_dir / "worker")  # job folders: a lost attempt resumes
    if status_port is not None:
        from registry.worker_status import serve_status

        status = serve_status(runner.status, "127.0.0.1", status_port)
        log.info(f"worker status on http://127.0.0.1:{status.server_port}/health and /metrics")
    threading.Thread(target=runner.run_forever, name="vera-worker", daemon=True).start()


def serve_model(
    base: Annotated[str, typer.Option(help="Base model: 'minilm' (the offline demo model), a local directory, or a "
                                       "Hub id in this machine's Hugging Face cache.")] = "minilm",
    base_name: Annotated[str | None, typer.Option(help="The base model's name in the registry; adapters published "
                                                  "for another base are refused. Default: --base.")] = None,
    task: Annotated[str, typer.Option(help="classification or causal-lm.")] = "classification",
    host: Annotated[str, typer.Option(help="Bind address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8766,
    max_resident: Annotated[int, typer.Option(help="Adapters kept loaded (least recently used go first; pinned "
                                              "never).")] = 10_000,
    max_banks: Annotated[int, typer.Option(help="Projection families (each holds a copy of the base).")] = 4,
    pinned_banks_per_user: Annotated[int, typer.Option(help="Banks one user's pins may hold (registry admins: any "
                                                       "but the last, as all pins together).", min=1)] = 1,
    max_batch: Annotated[int, typer.Option(help="Rows per forward: texts classified at once, and generation rows "
                                           "decoded together per projection family (continuous batching).")] = 64,
    max_queue: Annotated[int, typer.Option(help="Rows waiting at most (a generation row, or a text to classify); "
                                           "beyond, a 503 to retry.")] = 1024,
    prefill_chunk: Annotated[int, typer.Option(help="Prompt tokens per prefill forward (rows x tokens); a longer "
                                               "prefill runs in chunks, the rows decoding taking a step between "
                                               "two. 0: whole.", min=0)] = 512,
    classify_tokens: Annotated[int, typer.Option(help="Tokens per classification forward (texts x the longest, each "
                                                 "text read to its first 256); a request's other texts go in the "
                                                 "next forwards, other callers' between two. 0: --max-batch texts "
                                                 "whatever their length.", min=0)] = 2048,
    max_tokens: Annotated[int, typer.Option(help="New tokens one choice may ask for at most (OpenAI's max_tokens, "
                                            "/v1/generate's max_new_tokens), within the base's context too.",
                                            min=1, max=32_768)] = 512,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    generation_config: Annotated[str, typer.Option(help="auto: OpenAI's routes sample with the base's "
                                                   "generation_config.json temperature, top_p and top_k where a "
                                                   "request leaves them out (as vLLM's auto); none: OpenAI's "
                                                   "defaults.")] = "none",
    registry: RegistryUrl = None, log_level: LogLevel = None,
) -> None:
    """Serve many registry adapters on one base model: hot-loaded on first use, batched together (generation
    continuously: a request joins the rows decoding at their next token); its own API
    (/v1/classify, /v1/generate) and OpenAI's (/v1/completions, /v1/chat/completions, /v1/models), where `model`
    names the adapter."""
    import uvicorn

    from registry.serving.api import create_serving_app
    from registry.serving.server import ModelServer

    if task not in ("classification", "causal-lm"):
        fail(InvalidInput(f"--task must be classification or causal-lm, got {task!r}."))
    if generation_config not in ("auto", "none"):
        fail(InvalidInput(f"--generation-config must be auto or none, got {generation_config!r}."))
    _check_free(port, "--port", host=host)  # before the model loads (it died after, with uvicorn's log line)
    settings = start_logging(load_settings(None), log_level)
    # the batcher releases the interpreter's lock at every torch op and waits for it after each: with another
    # thread busy in Python (a request's 500,000 log-probabilities written as JSON) it waited up to the switch
    # interval (5 ms) per op, every stream pausing 4-6 s; at 0.5 ms the longest pause measured 1.0-1.5 s
    sys.setswitchinterval(0.0005)
    server = ModelServer(base, task=task, base_name=base_name,  # type: ignore[arg-type]
                         client_for=lambda caller: RegistryClient(registry, caller or ""),  # never ours
                         max_resident=max_resident, max_banks=max_banks, max_batch=max_batch, device=device,
                         max_queue=max_queue, prefill_chunk=prefill_chunk or None,
                         classify_tokens=classify_tokens or None, max_tokens=max_tokens,
                         pinned_banks_per_user=pinned_banks_per_user,
                         generation_config=generation_config)  # type: ignore[arg-type]
    with RegistryClient(registry, "", timeout=10, retries=0, cache=False) as client:
        log.info(f"vera serve-model on http://{host}:{port}: {server.base_name} ({task}), adapters from {client.url}")
        try:
            client.health()
        except RegistryError as exc:  # served anyway: the registry may come up later; every request says so meanwhile
            log.warning(f"the registry at {client.url} does not answer now ({first_line(exc, 300)}): requests for "
                        "adapters fail with 503 until it does. Set --registry or VERA_REGISTRY_URL to its address.")
    uvicorn.run(create_serving_app(server), host=host, port=port, log_config=None, log_level=settings.log_level,
                access_log=False, ws="none")


def _check_free(port: int, option: str, *, other: str = "", host: str = "127.0.0.1") -> None:
    """Exit, naming ``option``, when something already listens on ``host``:``port``: before anything starts, so
    that nothing is announced that will not run."""
    import errno
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn and Streamlit bind
        try:
            probe.bind((host, port))
        except OSError as exc:
            why = "is taken (another `vera up`, or another program)" if exc.errno == errno.EADDRINUSE else \
                f"cannot be used ({exc.strerror})"
            fail(InvalidInput(f"Port {port} on {host} {why}: pass {option} with a free port{other}."))


def _dashboard(port: int, registry_url: str, option: str = "--port", other: str = "", *,
               host: str = "127.0.0.1", dataset_bytes: int | None = None) -> subprocess.Popen[bytes]:
    """Start the Streamlit dashboard (a child process) against ``registry_url`` on ``host``; a port taken exits,
    naming the command's ``option`` for it (and ``other`` ways out). ``dataset_bytes``: the registry's largest job
    dataset (VERA_MAX_DATASET_BYTES, where the registry runs beside it), the Train page's upload bound (else
    web_ui/.streamlit/config.toml's, the default's; Streamlit's own 200 MB promised files the registry refuses: a
    dashboard walk, session 48)."""
    import importlib.util

    import web_ui

    if importlib.util.find_spec("streamlit") is None:
        fail(InvalidInput("The dashboard needs its extra: pip install 'vera-registry[ui]' (or run `vera up --no-ui`)."))
    _check_free(port, option, other=other, host=host)
    try:
        ui_remember_days(os.environ)  # a bad VERA_UI_REMEMBER_DAYS stops here, not on every page
    except InvalidInput as exc:
        fail(exc)
    command = [sys.executable, "-m", "streamlit", "run", str(web_ui.ENTRY), "--server.port", str(port),
               "--server.address", host, "--server.headless", "true", "--browser.gatherUsageStats", "false",
               "--global.developmentMode", "false", "--client.toolbarMode", "minimal",
               # vera prints the dashboard's URL itself; Streamlit's own lines asked checkip.amazonaws.com for an
               # "External URL" on every start with a wildcard --host (offline: "Did not auto detect external IP")
               "--logger.hideWelcomeMessage", "true",
               # and "Uvicorn server started on :::8501" (Streamlit's server), read as a second API (session 40)
               "--logger.level", "warning",
               *(["--server.maxUploadSize", str(-(-dataset_bytes // 2**20))] if dataset_bytes else [])]
    return subprocess.Popen(command, env={**os.environ, "VERA_REGISTRY_URL": registry_url},
                            preexec_fn=_die_with_parent if sys.platform == "linux" else None)


def _die_with_parent() -> None:
    """In the child: get SIGTERM when `vera` exits, however it exits (uvicorn re-raises SIGTERM after shutdown,
    which skips `finally` blocks)."""
    import ctypes
    import signal

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def ui(
    port: Annotated[int, typer.Option(help="Dashboard port.")] = 8501,
    registry: RegistryUrl = None,
    host: Annotated[str, typer.Option(help="Bind address. On any non-loopback address the dashboard talks only to "
                                           "its registry unless VERA_UI_REGISTRIES lists more.")] = "127.0.0.1",
) -> None:
    """The dashboard (Streamlit) on http://HOST:PORT, talking to the registry's API."""
    from registry.api import is_loopback

    with RegistryClient(registry, "") as client:
        url = client.url
    shared = not is_loopback(host)
    if shared and "VERA_UI_REGISTRIES" not in os.environ:
        os.environ["VERA_UI_REGISTRIES"] = ""  # visitors must not point the dashboard's server anywhere they like
        console.print(f"note: others can reach {host}: the dashboard talks only to {url} (list more in "
                      "VERA_UI_REGISTRIES)")
    if shared and os.environ.get("VERA_TOKEN"):
        console.print("note: VERA_TOKEN is set: every visitor reads and acts with that token. Unset it to have "
                      "each paste their own in the sidebar, or give the dashboard a read-only token.")
    process = _dashboard(port, url, host=host)
    console.print(f"dashboard on http://{host}:{port} for the registry at {url}")
    try:
        raise typer.Exit(process.wait())
    finally:
        if process.poll() is None:
            process.terminate()


def _log_where(host: str, port: int, say_url: bool) -> None:
    """With ``say_url`` (`vera serve`, which said none: a PEFT user's walk), the lines that point other shells'
    `vera` here, as log lines."""
    for line in registry_url_lines(host, port) if say_url else []:
        log.info(line)


def say_registry_url(host: str, port: int) -> None:
    """Print the lines that point other shells' `vera` at this registry (`vera up`)."""
    for line in registry_url_lines(host, port):  # each a line of its own, unbroken, to paste whole (a newcomer's walk)
        console.print(line, soft_wrap=True)


def registry_url_lines(host: str, port: int) -> list[str]:
    """The lines that point other shells' `vera` at this registry, where it is not the default, and teammates'
    where it listens on every address (`vera up` prints them, `vera serve` logs them)."""
    shown = "127.0.0.1" if host == "0.0.0.0" else host
    lines = ([f"for `vera` in other shells: export VERA_REGISTRY_URL=http://{shown}:{port}"]
             if f"http://{shown}:{port}" != DEFAULT_URL else [])
    if host == "0.0.0.0":  # 127.0.0.1 is of no use to teammates (a team admin's walk)
        found = team_host()
        what = ("this machine's name or address on their network: it names none but its loopback" if found is None
                else "this machine's address on the network its traffic leaves by" if _is_address(found)
                else "this machine's name; its address if their machines do not resolve it")  # (an address was
                # called "this machine's name": an audit, session 53)
        lines.append(f"for teammates: export VERA_REGISTRY_URL=http://{found or 'THIS-MACHINE'}:{port} ({what})")
    return lines


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def team_host() -> str | None:
    """A name or address of this machine that teammates can reach: its fully qualified name, else its host name,
    unless it names only the loopback (a VM's 'localhost': the hint told teammates to use localhost, a newcomer's
    walk, session 38); else the address its default route leaves from (a UDP socket's connect sends nothing); None
    if all are loopback."""
    from registry.api import is_loopback

    for name in dict.fromkeys((socket.getfqdn(), socket.gethostname())):
        try:
            addresses = {str(info[4][0]).split("%")[0] for info in socket.getaddrinfo(name, None)}  # (no zone id)
        except (OSError, UnicodeError):
            continue
        if name and not is_loopback(name.lower()) and not all(map(is_loopback, addresses)):
            return name
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.1", 9))  # TEST-NET-1 (RFC 5737): never reached, only routed
        address = str(probe.getsockname()[0])
        if not is_loopback(address) and address != "0.0.0.0":
            return address
    return None


def up(
    port: Annotated[int, typer.Option(help="API port.")] = 8765,
    ui_port: Annotated[int, typer.Option(help="Dashboard port.")] = 8501,
    with_ui: Annotated[bool, typer.Option("--ui/--no-ui", help="Start the dashboard too.")] = True,
    host: Annotated[str, typer.Option(help="Bind address of the API and the dashboard: 0.0.0.0 for a team on "
                                           "this machine's network, which requires tokens (`vera token create`; "
                                           "docs/deployment.md, \"A small team on one machine\").")] = "127.0.0.1",
    worker_status_port: Annotated[int | None, typer.Option(min=0, max=65535, help="Serve the job worker's GET "
                                                           "/health and GET /metrics on 127.0.0.1 at this port (as "
                                                           "`vera worker --status-port`).")] = None,
    log_level: LogLevel = None, read_only: ReadOnlyMode = False,
) -> None:
    """The product on the embedded default: the API, one job worker and the dashboard on 127.0.0.1 (--host), with
    SQLite and a local folder (VERA_DATA_DIR). Read-only (--read-only): no worker, and the API changes nothing.
    """
    embedded = load_settings(None, read_only=read_only)
    _worker_can_run(embedded, 1)  # before the dashboard starts and the addresses are printed
    api = f"http://127.0.0.1:{port}"  # the dashboard's way to the API, on this machine whatever the bind address
    _check_free(port, "--port", host=host)
    dashboard = _dashboard(ui_port, api, "--ui-port", ", or --no-ui", host=host,
                           dataset_bytes=embedded.max_dataset_bytes) if with_ui else None
    shown = "127.0.0.1" if host == "0.0.0.0" else host  # the address to print, not to bind
    if dashboard is not None:
        console.print(f"dashboard on http://{shown}:{ui_port}" + (" (and this machine's other addresses)"
                                                                    if host == "0.0.0.0" else ""))
    console.print(f"registry API on http://{shown}:{port}")
    say_registry_url(host, port)
    try:
        run_api(host, port, embedded, with_worker=True, log_level=log_level, worker_status_port=worker_status_port)
    finally:
        if dashboard is not None and dashboard.poll() is None:
            dashboard.terminate()
            dashboard.wait(timeout=20)
