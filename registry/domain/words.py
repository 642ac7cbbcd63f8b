"""Numbers in words, as the CLI, the API's messages and the dashboard (web_ui.formats) all say them, sizes read
back from words ("50GB"), a trusted publisher's CI run and an adapter's retention rule in words."""

from __future__ import annotations

import re
import sys
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from registry.domain.schemas import JobInfo, RetentionInfo

UNITS = ("B", "KB", "MB", "GB", "TB")


def kept_by(rule: RetentionInfo | None) -> str:
    """What an adapter's retention rule keeps, in words (`vera retention`, the dashboard's Edit tab)."""
    if rule is None:
        return "no retention rule: every version stays until someone deletes it"
    by_count = f"the newest {counted(rule.keep_last, 'version')}" if rule.keep_last is not None else ""
    by_age = (f"those published in the last {rule.keep_days:g} day{'' if rule.keep_days == 1 else 's'}"
              if rule.keep_days is not None else "")
    newest = "" if by_count else "the newest version"  # (the newest N hold it: said once, a walk, session 56)
    parts = [p for p in (by_count, by_age, newest, "any version an alias (latest included) points at") if p]
    return (f"keeps {' and '.join(parts) if len(parts) == 2 else ', '.join(parts[:-1]) + ', and ' + parts[-1]}; the "
            "registry deletes the others about once an hour")


#: Said where a rule's effect is shown, when the registry applies none (RetentionPreview.applied is False).
RULES_OFF = ("this registry applies no retention rule now (its operator set VERA_RETENTION_RULES=false): nothing is "
             "deleted by a rule until it is set back")


def counted(n: int, thing: str) -> str:
    """(1, 'event') -> '1 event'; (1200, 'event') -> '1,200 events'."""
    return f"{n:,} {thing}" + ("" if n == 1 else "s")


def shown_number(value: object, spec: str = "") -> str:
    """A number as a message says it (``spec``: its format, e.g. ","), or, past 30 digits, its first ones and how
    many there are: JSON writes integers of thousands of digits, and a refusal echoed all 4,000 of one (an
    outsider's walk, session 44)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 99:  # (2**99: 30 digits)
        try:
            text = str(value)
        except ValueError:  # past sys.get_int_max_str_digits (4,300): Python refuses to write it at all
            return f"an integer of over {sys.get_int_max_str_digits():,} digits"
        return f"{text[:12]}... (an integer of {len(text.lstrip('-')):,} digits)"
    return format(value, spec) if isinstance(value, int | float) and not isinstance(value, bool) else repr(value)


def size(n: int) -> str:
    """120008 -> '120.0 KB' (1 KB = 1,000 B, with a space); under 1 KB in bytes ('512 B')."""
    value = float(n)
    for unit in UNITS:
        if abs(value) < 1000 or unit == UNITS[-1]:
            return f"{n:,} B" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable: the last unit returns")


#: A size in words: digits (ASCII; a decimal point allowed), then a unit of bytes, nothing before or after.
_SIZE = re.compile(r"(\d+(?:\.\d+)?) ?([kmgtpe]i?)?b?", re.IGNORECASE | re.ASCII)
_SCALE = {"": 1, **{p: 1000 ** (n + 1) for n, p in enumerate("kmgtpe")},
          **{p + "i": 1024 ** (n + 1) for n, p in enumerate("kmgtpe")}}


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def parse_size(value: object, *, most: int) -> int:
    """Bytes from an int or from words: '50GB' (50*10^9), '50GiB' (50*2^30), '1.5 TB', '50g' (as 50GB), '512',
    '512 B'; ValueError, saying what is expected, for anything else (a thousands separator, a sign, an exponent,
    digits other than 0-9, a bool, a float) or a size outside 0..``most``."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"{_shown(value)} is not a size: give bytes (50000000000) or a number with a unit (50GB = "
                         "50*10^9 bytes, 50GiB = 50*2^30, 1.5TB)")
    if isinstance(value, str):
        found = _SIZE.fullmatch(value.strip()) if len(value) <= 40 else None
        if found is None:
            raise ValueError(f"{_shown(value)} is not a size: give bytes (50000000000) or a number with a unit (50GB "
                             "= 50*10^9 bytes, 50GiB = 50*2^30, 1.5TB)")
        number, prefix = found.groups()
        value = int(Fraction(number) * _SCALE[(prefix or "").lower()])  # exact: no float rounding
    if not 0 <= value <= most:
        raise ValueError(f"{_shown(value)} is out of range: give 0 to {most:,} bytes")
    return value


#: The claims that say which run published a version, in the order they are said (GitHub Actions', then GitLab
#: CI's names): the repository, its ref, the commit, the workflow, the run.
RUN_CLAIMS = (("repository", "project_path"), ("ref",), ("sha",), ("workflow", "job_workflow_ref"),
              ("run_id", "pipeline_id"))


def ci_run(via: dict[str, Any]) -> str:
    """A version's ``published_via`` (trusted publishing's provenance) in words, for `vera show`: 'acme/adapters
    refs/heads/main at 1a2b3c4d5e6f7a8b9c0d1a2b3c4d5e6f7a8b9c0d, workflow publish, run 1234 (trusted publisher
    acme-main, https://token.actions...)' (the commit whole: `vera ls --filter "published_via.sha = '...'"` takes
    it); the subject when the token carried none of RUN_CLAIMS. (The dashboard labels each claim:
    web_ui.lineage.ci_details.)"""
    given = via.get("claims")
    claims: dict[str, Any] = given if isinstance(given, dict) else {}
    said = ""
    for names in RUN_CLAIMS:
        found = next((claims[n] for n in names if isinstance(claims.get(n), str)), None)
        if found is not None:
            said += {"sha": f" at {found}", "workflow": f", workflow {found}",
                     "run_id": f", run {found}"}.get(names[0], f" {found}")
    if not said and isinstance(via.get("subject"), str):
        said = via["subject"]
    return f"{said.strip(' ,')} (trusted publisher {via.get('publisher', '?')}, {via.get('issuer', '?')})"


def span(time: timedelta) -> str:
    """'45 s', '2 min 05 s'."""
    seconds = max(0, round(time.total_seconds()))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


#: How long a job waits in the queue before its views (the dashboard's Train page, `vera job show` and `vera job logs
#: --follow`) say that no worker has claimed it.
UNCLAIMED_AFTER = timedelta(seconds=30)


def unclaimed_hint(job: JobInfo, now: datetime | None = None) -> str | None:
    """What to do about a job that has waited UNCLAIMED_AFTER or longer for a worker (since it was submitted, last
    ran, or became claimable after a lost attempt), or None: most often no worker runs for this registry."""
    if job.status != "queued":
        return None
    since = max(t for t in (job.created_at, job.heartbeat_at, job.not_before) if t is not None)
    waited = (now or datetime.now(UTC)) - since
    if waited < UNCLAIMED_AFTER:
        return None
    waiting = f"No worker has claimed job {job.id} in the {span(waited)} it has been queued."
    if job.gpus:  # a CPU worker may well be running: the question is whether one owns GPUs (a docs audit, session 53)
        return (f"{waiting} It asks for {counted(job.gpus, 'GPU')}: only a worker that owns as many claims it. Is "
                "one running for this registry? Start one on a machine that has them and reaches the registry's "
                "database and storage: `vera worker --device cuda:all`.")
    return (f"{waiting} Is a worker running for this registry? Start one on a machine that reaches the registry's "
            "database and storage: `vera worker` (or `vera up`, which runs the API, a worker and the dashboard "
            "together).")
