"""``demo.agent``: a simulated agent run in durable steps, with no network and no key.

    research ─▶ outline ─▶ section ─▶ section ─▶ … (one step per section: one name, told apart by
                                                    its occurrence)

Each step streams its words at ``delay_ms`` a word and records one simulated model call (tokens and
latency, priced as ``model``). A restarted attempt gets the completed steps back from Redis with
their output, without running them, and runs the first one not completed. The text is a pure function
of the input, so a restarted run's text can be compared with an uninterrupted one.

Input: ``{topic, sections?: 3, tokens_per_step?: 30, delay_ms?: 20, model?: "gpt-4.1-mini",
fail?: {step, times, class}}``. ``fail`` makes the named step (``outline``, ``section`` for every
section, ``section#2`` for the second) fail its first ``times`` tries, counted over the job's attempts
(each attempt tries a step up to STEP_TRIES times, so a transient failure is retried inside the
attempt first).
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from typing import Any

from shared.jobtypes import DEMO_AGENT

from ..context import JobContext
from ..registry import JobType
from ..steps import Retry
from .demo import FAILURES, VOCABULARY

#: tries of one step within an attempt, and the back-off between them
STEP_TRIES = 3
STEP_RETRY = Retry(tries=STEP_TRIES, backoff_s=0.2, max_backoff_s=2.0)
DEFAULT_MODEL = "gpt-4.1-mini"


def plan(topic: str, sections: int) -> list[str]:
    """The step keys of a run, in order."""
    return ["research#1", "outline#1", *(f"section#{i + 1}" for i in range(sections))]


def step_words(topic: str, key: str, per_step: int) -> list[str]:
    """The words of one step: a pure function of the input."""
    rng = random.Random(int.from_bytes(hashlib.sha256(f"{topic}\0{key}".encode()).digest()[:8], "big"))
    name = key.partition("#")[0]
    return [f"[{name}]", *(rng.choice(VOCABULARY) for _ in range(per_step))]


def agent_text(topic: str, sections: int, per_step: int) -> str:
    """The whole output of a run."""
    return "".join(w + " " for key in plan(topic, sections) for w in step_words(topic, key, per_step))


class Agent:
    def __init__(self, ctx: JobContext) -> None:
        spec = ctx.input
        self.ctx = ctx
        self.topic: str = spec["topic"]
        self.sections = int(spec.get("sections", 3))
        self.per_step = int(spec.get("tokens_per_step", 30))
        self.delay = float(spec.get("delay_ms", 20)) / 1000
        self.model: str = spec.get("model") or DEFAULT_MODEL
        self.fail: dict[str, Any] | None = spec.get("fail")
        #: tries of each step key in this attempt
        self.tries: dict[str, int] = {}

    def _maybe_fail(self, key: str) -> None:
        fail = self.fail
        if not fail or fail["step"] not in (key, key.partition("#")[0]):
            return
        self.tries[key] = tries = self.tries.get(key, 0) + 1
        overall = (self.ctx.attempt - 1) * STEP_TRIES + tries
        if overall <= int(fail["times"]):
            raise FAILURES[fail["class"]](f"demo failure of step {key} (try {overall} of {fail['times']} failing)")

    async def run_step(self, key: str, index: int) -> dict[str, Any]:
        self._maybe_fail(key)
        words = step_words(self.topic, key, self.per_step)
        for word in words:
            await self.ctx.output(word + " ")
            if self.delay:
                await asyncio.sleep(self.delay)
        # a simulated call: the context grows with each step, and what the last step sent is cached
        input_tokens = 400 + 120 * index
        await self.ctx.record_usage(model=self.model, input_tokens=input_tokens,
                                    cached_tokens=0 if index == 0 else 400 + 120 * (index - 1),
                                    output_tokens=len(words) * 2, latency_ms=int(self.delay * len(words) * 1000))
        return {"step": key, "words": len(words)}

    async def main(self) -> dict[str, Any]:
        keys = plan(self.topic, self.sections)
        done: list[dict[str, Any]] = []
        for index, key in enumerate(keys):
            name = key.partition("#")[0]
            await self.ctx.progress(f"{name.capitalize()}: {self.topic}", step=name, fraction=index / len(keys))
            done.append(await self.ctx.step(name, self.run_step, key, index, retry=STEP_RETRY))
        await self.ctx.progress("Done", step="done", fraction=1.0)
        return {"title": f"{self.topic}: a report", "steps": [d["step"] for d in done],
                "words": sum(d["words"] for d in done)}


async def agent(ctx: JobContext) -> dict[str, Any]:
    """A simulated agent run in durable steps."""
    return await Agent(ctx).main()


demo_agent = JobType(policy=DEMO_AGENT, handler=agent)
