"""What a worker's claim costs since users take the workers in turn (session 44): the reads of the next job,
registry.services.jobs.running_by_user then next_claim (ordered by the user's running jobs, then priority, then
age), against the order by priority and age alone that they replaced, on the same queue, rounds alternated. The
queue: ``--queued`` jobs of ``--users`` users at random priorities, with 0, then ``--running`` of them running
(spread over the users), on SQLite or the local PostgreSQL. Both must pick a job (which one differs: that is the
change).

    .venv/bin/python bench/job_claims.py [--queued 10000] [--users 100] [--running 50,500] [--rounds 5]
        [--database sqlite|postgresql]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import Select, insert, or_, select, update  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from registry.services.jobs import next_claim, running_by_user  # noqa: E402
from registry.store import models as m  # noqa: E402
from registry.store.database import Database  # noqa: E402
from tests.registry.conftest import fresh_postgres  # noqa: E402


def by_priority(now: datetime, gpus: int) -> Select[m.Job]:
    """The claim's query before session 44: the highest priority of anyone's, the oldest among equals."""
    return (select(m.Job).where(m.Job.status == "queued", or_(m.Job.not_before.is_(None), m.Job.not_before <= now),
                                m.Job.gpus <= gpus)
            .order_by(m.Job.priority.desc(), m.Job.created_at, m.Job.id).limit(1))


@contextmanager
def database(kind: str) -> Iterator[str]:
    if kind == "postgresql":
        with fresh_postgres("vera_bench") as url:
            yield url
        return
    with tempfile.TemporaryDirectory() as tmp:
        yield f"sqlite:///{tmp}/r.db"


def fill(db: Database, queued: int, users: int) -> None:
    rng, start = random.Random(0), datetime.now(UTC) - timedelta(days=1)
    rows = [{"spec": {}, "owner": f"u{i % users}", "target_name": f"u{i % users}/j{i}", "status": "queued",
             "progress": {}, "priority": rng.randint(-100, 100), "requested_by": f"u{i % users}",
             "created_at": start + timedelta(seconds=i)} for i in range(queued)]
    with db.session() as s:
        for at in range(0, len(rows), 2000):
            s.execute(insert(m.Job), rows[at:at + 2000])


def run_some(db: Database, count: int, users: int) -> None:
    """Mark the oldest ``count`` queued jobs running, spread over the users."""
    with db.session() as s:
        for user in range(users):
            ids = s.scalars(select(m.Job.id).where(m.Job.status == "queued", m.Job.owner == f"u{user}")
                            .order_by(m.Job.id).limit(count // users + (user < count % users))).all()
            s.execute(update(m.Job).where(m.Job.id.in_(ids)).values(status="running", heartbeat_at=datetime.now(UTC)))


def timed(db: Database, query: Callable[[Session], object], reps: int) -> float:
    """Seconds per claim's read (``query`` of a session: the job it picks), the median of ``reps``."""
    times = []
    with db.session() as s:
        for _ in range(reps):
            began = time.perf_counter()
            picked = query(s)
            times.append(time.perf_counter() - began)
            if picked is None:
                raise SystemExit("no job was picked: the queue is empty")
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queued", type=int, default=10_000)
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--running", default="50,500", help="comma-separated counts of running jobs, after none")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--reps", type=int, default=20, help="queries a round, each way")
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    args = parser.parse_args()
    print(f"{args.database}: {args.queued:,} queued jobs of {args.users} users; {args.rounds} rounds of "
          f"{args.reps} queries each way, alternated")
    with database(args.database) as url:
        db = Database(url)
        db.upgrade()
        fill(db, args.queued, args.users)
        running = 0
        for target in [0, *(int(n) for n in args.running.split(","))]:
            run_some(db, target - running, args.users)
            running = target
            old, new = [], []
            for _ in range(args.rounds):
                old.append(timed(db, lambda s: s.scalar(by_priority(datetime.now(UTC), 0)), args.reps))
                new.append(timed(db, lambda s: s.scalar(next_claim(datetime.now(UTC), 0, running_by_user(s))),
                                 args.reps))
            before, after = statistics.median(old), statistics.median(new)
            print(f"  {running:>4} running: by priority {before * 1e3:7.2f} ms, users in turn {after * 1e3:7.2f} ms "
                  f"(x{after / before:.2f}; rounds {min(new) * 1e3:.2f}-{max(new) * 1e3:.2f} ms)")
        db.engine.dispose()


if __name__ == "__main__":
    main()
