"""The job table on its own: what it keeps, finds, expires and evicts, on a clock the test sets."""

from __future__ import annotations

from swarm_inference_mcp.server.jobs.outcome import Answered, Failed, Failure, Outcome, Trace
from swarm_inference_mcp.server.jobs.table import Job, JobTable, Run, Work
from swarm_inference_mcp.tools.models import Answer


async def _never(_progress: object, _job_id: str) -> Outcome:
    raise AssertionError("the table never runs work")


def job(n: int, client: str | None = None, request: str = "body") -> Job:
    work = Work("ask_swarm", ("swarms",), "Swarms", request, 60.0, client, _never)
    return Job.of(f"j_aaaaaa-{n:012x}", work, 0.0, Run(work, streams=False, started=0.0))


def key(one: Job) -> str:
    """The key of a job's work, as the table keys it."""
    assert one.here is not None
    return one.here.work.key


ANSWER = Answered("swarms", Answer(text="yes"), Trace(latency_ms=5))
FAILED = Failed(Failure("Swarms: HTTP 500.", {"kind": "upstream", "message": "Swarms: HTTP 500.", "retryable": False}))


def finished(table: JobTable, one: Job, outcome: Outcome, now: float, *, kept: bool = True) -> None:
    one.outcome, one.kept = outcome, kept
    table.finish(one, now)


def test_a_running_job_is_found_by_id_and_by_its_work() -> None:
    table = JobTable(ttl_s=10, max_kept=5)
    first = job(1)
    table.add(first)
    assert table.get(first.id) is first
    assert table.running(key(first)) is first
    assert table.running_jobs() == [first]
    assert table.answered(key(first)) is None


def test_a_job_whose_handle_never_went_out_is_forgotten_when_it_finishes() -> None:
    table = JobTable(ttl_s=10, max_kept=5)
    first = job(1)
    table.add(first)
    finished(table, first, ANSWER, now=1.0, kept=False)
    assert table.get(first.id) is None
    assert table.running(key(first)) is None
    assert table.answered(key(first)) is None
    assert table.why_unknown(first.id) == "never"


def test_a_handed_out_answer_is_kept_and_serves_identical_work_until_it_expires() -> None:
    table = JobTable(ttl_s=10, max_kept=5)
    first = job(1)
    table.add(first)
    finished(table, first, ANSWER, now=100.0)
    assert table.get(first.id) is first
    assert first.here is not None
    assert first.here.finished == 100.0  # on the table's clock
    assert table.answered(key(first)) is first
    assert table.running(key(first)) is None
    table.expire(109.9)
    assert table.get(first.id) is first
    table.expire(110.0)
    assert table.get(first.id) is None
    assert table.answered(key(first)) is None
    assert table.why_unknown(first.id) == "expired"


def test_a_kept_failure_is_found_by_id_but_serves_no_identical_call() -> None:
    table = JobTable(ttl_s=10, max_kept=5)
    first = job(1)
    table.add(first)
    finished(table, first, FAILED, now=1.0)
    assert table.get(first.id) is first
    assert first.status == "failed"
    assert table.answered(key(first)) is None


def test_past_max_kept_the_oldest_finished_is_evicted_first() -> None:
    table = JobTable(ttl_s=1000, max_kept=2)
    jobs = [job(n, request=f"body {n}") for n in range(3)]
    for n, one in enumerate(jobs):
        table.add(one)
        finished(table, one, ANSWER, now=float(n))
    assert table.get(jobs[0].id) is None
    assert table.why_unknown(jobs[0].id) == "evicted"
    assert table.answered(key(jobs[0])) is None
    assert [table.get(one.id) for one in jobs[1:]] == jobs[1:]


def test_a_newer_answer_of_the_same_work_outlives_the_eviction_of_an_older_one() -> None:
    table = JobTable(ttl_s=1000, max_kept=1)
    older, newer = job(1), job(2)
    table.add(older)
    finished(table, older, ANSWER, now=1.0)
    table.add(newer)
    finished(table, newer, ANSWER, now=2.0)  # evicts the older, which no longer is the answered one
    assert table.answered(key(newer)) is newer


def test_jobs_are_listed_per_client() -> None:
    table = JobTable(ttl_s=10, max_kept=5)
    alice, bob = job(1, "alice"), job(2, "bob")
    table.add(alice)
    table.add(bob)
    assert table.of_client("alice") == [alice]
    assert table.of_client(None) == []


def test_a_client_past_max_kept_evicts_its_own_oldest_never_another_clients() -> None:
    """bob finishing many jobs cannot push out alice's uncollected one (before: one table for all)."""
    table = JobTable(ttl_s=1000, max_kept=2)
    alices = job(0, "alice", request="alice's")
    table.add(alices)
    finished(table, alices, ANSWER, now=0.0)
    bobs = [job(n, "bob", request=f"bob {n}") for n in range(1, 1002)]
    for n, one in enumerate(bobs, start=1):
        table.add(one)
        finished(table, one, ANSWER, now=float(n))
    assert table.get(alices.id) is alices
    assert table.answered(key(alices)) is alices
    assert [table.get(one.id) for one in bobs[-2:]] == bobs[-2:]
    assert table.get(bobs[0].id) is None
    assert table.why_unknown(bobs[0].id) == "evicted"
    table.expire(1000.0)
    assert table.get(alices.id) is None
    assert table.why_unknown(alices.id) == "expired"
