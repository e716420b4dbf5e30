"""The server's side of the comparison: a job's whole event stream fetched with httpx, as any SSE client would."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx
from httpx_sse import connect_sse
from ui_servers import client


@dataclass
class Replay:
    events: list[dict[str, Any]]

    @property
    def newest_attempt(self) -> int:
        return max((e["attempt"] for e in self.events), default=0)

    @property
    def output(self) -> str:
        """What a client must show: the newest attempt's output, concatenated in order."""
        newest = self.newest_attempt
        return "".join(e["text"] for e in self.events if e["type"] == "output" and e["attempt"] == newest)

    @property
    def statuses(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == "status"]


def replay(base_url: str, job_id: str) -> Replay:
    """The whole history; the server ends the response after the terminal status event."""
    events: list[dict[str, Any]] = []
    with client(base_url) as http, connect_sse(
        http, "GET", f"/v1/jobs/{job_id}/events", params={"compact": "false"}, timeout=httpx.Timeout(10, read=30)
    ) as source:
        for sse in source.iter_sse():
            events.append(json.loads(sse.data))
    last = 0
    for event in events:  # replayed outputs may be merged: first_seq..seq
        assert event.get("first_seq", event["seq"]) == last + 1, f"a gap or repeat after seq {last}: {event}"
        last = event["seq"]
    return Replay(events)
