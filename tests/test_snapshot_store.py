"""The output text that ``append`` keeps and the snapshot ``snapshot.lua`` reads, against a real Redis."""

from __future__ import annotations

from typing import Any

import pytest
from http_server import SimWorker

from shared.jobs import JobStore, NewJob, Snapshot
from shared.serialization import loads

pytestmark = pytest.mark.anyio

TYPE = "demo.story"


async def new_job(store: JobStore) -> str:
    created = await store.create(NewJob(tenant="acme", type=TYPE, input={"topic": "x"}, max_attempts=5))
    return created.job_id


async def retry(store: JobStore, job_id: str, token: int) -> None:
    outcome = await store.transition(job_id, TYPE, "queued", token=token,
                                     event={"reason": "retry", "error": {"class": "transient"}})
    assert outcome.outcome == "ok"


async def snapshot(store: JobStore, job_id: str, after: str | None = None, within: int = 0,
                   event_bytes: int = 90) -> Snapshot | None:
    return await store.snapshot(job_id, after, within, event_bytes)


async def kept(store: JobStore, job_id: str) -> str:
    return str(await store.redis.get(store.keys.text(job_id)) or "")


async def events(store: JobStore, job_id: str) -> list[tuple[str, dict[str, Any]]]:
    return [(entry_id, loads(data)) for entry_id, _, data in await store.read_events(job_id, None, count=100_000)]


async def test_the_text_follows_the_newest_attempt_and_the_snapshot_reads_one_instant(store: JobStore) -> None:
    job_id, sim = await new_job(store), SimWorker(store)
    token = await sim.start(job_id)
    await sim.emit(job_id, token, ("progress", {"message": "writing", "fraction": 0.5}))
    await sim.output(job_id, token, "Hel", "lo ")
    await retry(store, job_id, token)
    assert await kept(store, job_id) == "Hello "
    waiting = await snapshot(store, job_id)
    assert waiting is not None
    history = await events(store, job_id)
    assert (waiting.status, waiting.attempt, waiting.text, waiting.draft) == ("queued", 1, "Hello ", None)
    assert (waiting.cursor, waiting.seq) == (history[-1][0], history[-1][1]["seq"])
    assert loads(waiting.status_event) == history[-1][1]  # the queued event, reason and error included
    assert waiting.progress is not None and loads(waiting.progress) == history[2][1]

    token = await sim.start(job_id)
    assert await kept(store, job_id) == ""  # a new attempt starts with no output
    await sim.output(job_id, token, "Again")
    again = await snapshot(store, job_id)
    history = await events(store, job_id)
    assert again is not None
    assert (again.status, again.attempt, again.text) == ("running", 2, "Again")
    assert (again.cursor, again.seq) == (history[-1][0], len(history))
    assert loads(again.status_event)["status"] == "running" and loads(again.status_event)["attempt"] == 2
    # the newest progress stays until the next one, as a screen that replayed every event shows it
    assert again.progress is not None and loads(again.progress)["attempt"] == 1

    await sim.finish(job_id, token, result={"ok": True})
    done = await snapshot(store, job_id)
    assert done is not None and done.status == "completed" and loads(done.status_event)["result"] == {"ok": True}
    # the text expires with the job's other keys
    ttl = await store.redis.pttl(store.keys.text(job_id))
    assert 0 < ttl <= store.retention_ms
    assert await store.redis.pttl(store.keys.job(job_id)) > 0


async def test_any_text_is_kept_exactly(store: JobStore) -> None:
    """The plain path (no quote, no backslash) and the decoded one agree with what the events carry."""
    texts = ["plain ", 'a "quote" ', "back\\slash ", "line\nbreak\t", "ünïcödé ", "emoji 🦜 ", "\u0001ctl",
             "", "<tag>&amp;", "\u2028sep"]
    job_id, sim = await new_job(store), SimWorker(store)
    token = await sim.start(job_id)
    await sim.output(job_id, token, *texts)
    await sim.emit(job_id, token, ("output", {"text": "more ", "note": 1}), ("output", {"note": 2, "text": "end"}))
    streamed = "".join(e.get("text", "") for _, e in await events(store, job_id))
    assert await kept(store, job_id) == streamed == "".join(texts) + "more end"
    snap = await snapshot(store, job_id)
    assert snap is not None and snap.text == streamed


async def test_a_resent_batch_adds_its_text_once(store: JobStore) -> None:
    job_id, sim = await new_job(store), SimWorker(store)
    token = await sim.start(job_id)
    keys = store.append_keys(job_id)
    batch = [token, 0, "output", '"text":"a"', "output", '"text":"b"']
    assert await store.scripts.run("append", keys, batch) == 2
    assert await store.scripts.run("append", keys, batch) == 2
    assert await store.scripts.run("append", keys, [token, 1, "output", '"text":"b"', "output", '"text":"c"']) == 3
    assert await kept(store, job_id) == "abc"


async def test_only_a_client_far_behind_gets_a_snapshot(store: JobStore) -> None:
    job_id, sim = await new_job(store), SimWorker(store)
    token = await sim.start(job_id)
    await sim.output(job_id, token, *(f"w{i} " for i in range(30)))
    history = await events(store, job_id)  # queued, running, 30 outputs
    assert len(history) == 32
    assert await snapshot(store, job_id, within=32) is None  # the whole stream is one page
    assert await snapshot(store, job_id, within=31) is not None
    cursor = history[21][0]  # 10 events after it
    assert await snapshot(store, job_id, cursor, within=10) is None
    assert await snapshot(store, job_id, cursor, within=9) is not None
    assert await snapshot(store, job_id, history[-1][0]) is None  # nothing after it
    # a cursor between two entries counts the entry after it
    ms, n = history[21][0].split("-")
    between = f"{ms}-{int(n) + 1}" if history[22][0] != f"{ms}-{int(n) + 1}" else None
    if between is not None:
        assert await snapshot(store, job_id, between, within=10) is None
    assert await snapshot(store, job_id, "0-0", within=31) is not None  # before the first event: all of it


async def test_a_cursor_in_the_newest_attempt_gets_a_snapshot_only_when_it_is_smaller(store: JobStore) -> None:
    """The snapshot sends the output the client already holds again: worth it when that is less than
    the events it skips would cost besides their text."""
    job_id, sim = await new_job(store), SimWorker(store)
    token = await sim.start(job_id)
    await sim.output(job_id, token, *("x" * 200 for _ in range(100)))  # 200 bytes an event
    cursor = (await events(store, job_id))[-1][0]
    await sim.output(job_id, token, *("y" for _ in range(20)))
    # holds ~20,000 bytes; 20 events skipped at 90 bytes are 1,800: replay them
    assert await snapshot(store, job_id, cursor, within=5) is None
    # from the attempt's start it holds nothing of this attempt's output
    running = (await events(store, job_id))[1][0]
    assert await snapshot(store, job_id, running, within=5) is not None
    # a cursor in an older attempt holds nothing of the newest: a snapshot, however large its text
    await retry(store, job_id, token)
    token = await sim.start(job_id)
    await sim.output(job_id, token, *("z" * 200 for _ in range(100)))
    assert await snapshot(store, job_id, cursor, within=5) is not None


async def test_a_text_that_was_not_kept_is_never_sent(store: JobStore) -> None:
    """Events written by a version that kept no text (here: text_covers removed) must not be summed up by
    a snapshot with a partial text: the client gets every event until a new attempt starts covered."""
    job_id, sim = await new_job(store), SimWorker(store)
    token = await sim.start(job_id)
    await sim.output(job_id, token, "kept ")
    await store.redis.hdel(store.keys.job(job_id), "text_covers")
    await sim.output(job_id, token, "later ")
    assert await snapshot(store, job_id) is None
    assert await kept(store, job_id) == "kept "  # not extended: it would still miss nothing, but is not trusted
    await retry(store, job_id, token)
    assert await snapshot(store, job_id) is None
    token = await sim.start(job_id)
    await sim.output(job_id, token, "fresh")
    snap = await snapshot(store, job_id)
    assert snap is not None and snap.text == "fresh"


async def test_output_members_without_a_text_string_stop_the_text(store: JobStore) -> None:
    job_id, sim = await new_job(store), SimWorker(store)
    token = await sim.start(job_id)
    await sim.output(job_id, token, "a")
    keys = store.append_keys(job_id)
    assert await store.scripts.run("append", keys, [token, 1, "output", '"text":7']) == 2
    assert await snapshot(store, job_id) is None
    assert len(await events(store, job_id)) == 4  # the event is written all the same


async def test_an_apply_step_continues_after_its_approved_draft(store: JobStore) -> None:
    job_id, sim = await new_job(store), SimWorker(store)
    token = await sim.start(job_id)
    await sim.output(job_id, token, "the draft")
    review = await store.transition(job_id, TYPE, "needs_review", token=token, event={"result": "d"},
                                    fields={"result": '"d"', "action_hash": "h"})
    assert review.outcome == "ok"
    decided = await store.decide(job_id, TYPE, approve=True, by="ann", note=None, action_hash=None, has_apply=True)
    assert decided.outcome == "ok"
    token = await sim.start(job_id)
    await sim.output(job_id, token, "applied")
    snap = await snapshot(store, job_id)
    assert snap is not None and (snap.attempt, snap.draft, snap.text) == (2, "the draft", "applied")
    # the apply step retried: the UI shows that attempt's output alone
    await retry(store, job_id, token)
    token = await sim.start(job_id)
    await sim.output(job_id, token, "again")
    snap = await snapshot(store, job_id)
    assert snap is not None and (snap.attempt, snap.draft, snap.text) == (3, None, "again")


async def test_a_job_never_started_has_an_empty_snapshot(store: JobStore) -> None:
    job_id = await new_job(store)
    snap = await snapshot(store, job_id)
    assert snap is not None and (snap.status, snap.attempt, snap.text, snap.seq) == ("queued", 0, "", 1)
    assert await store.snapshot("0" * 32, None, 0, 90) is None  # no such job


async def test_a_draft_whose_text_was_not_kept_is_not_shown(store: JobStore) -> None:
    """An approved draft written by a version that kept no text: the apply step's attempt stays uncovered
    (every event is replayed) rather than showing an empty or partial draft."""
    job_id, sim = await new_job(store), SimWorker(store)
    token = await sim.start(job_id)
    await sim.output(job_id, token, "the draft")
    await store.redis.hdel(store.keys.job(job_id), "text_covers")
    assert (await store.transition(job_id, TYPE, "needs_review", token=token)).outcome == "ok"
    decided = await store.decide(job_id, TYPE, approve=True, by="ann", note=None, action_hash=None, has_apply=True)
    assert decided.outcome == "ok"
    token = await sim.start(job_id)
    await sim.output(job_id, token, "applied")
    assert await snapshot(store, job_id) is None
    assert await kept(store, job_id) == ""


async def test_a_new_attempt_between_the_script_and_the_text_read_is_read_again(
    store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The text is read after the script, up to the length it answered: valid only while the attempt is the
    same (the text only grows within one). Here a new attempt starts and writes a longer text in between."""
    job_id, sim = await new_job(store), SimWorker(store)
    token = await sim.start(job_id)
    await sim.output(job_id, token, "first ")
    run, raced = store.scripts.run, []

    async def then_restart(name: str, keys: list[str], args: list[Any], **options: Any) -> Any:
        reply = await run(name, keys, args, **options)
        if name == "snapshot" and not raced:
            raced.append(reply)
            await retry(store, job_id, token)
            new_token = await sim.start(job_id)
            await sim.output(job_id, new_token, "second attempt, longer")
        return reply

    monkeypatch.setattr(store.scripts, "run", then_restart)
    snap = await snapshot(store, job_id)
    assert raced and raced[0][2] == "1"  # the first read saw attempt 1
    assert snap is not None and (snap.attempt, snap.text) == (2, "second attempt, longer")
