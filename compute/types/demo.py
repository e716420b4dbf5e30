"""Built-in demo types that need no network and no key.

``demo.story`` streams a research → outline → write run word by word. Its output is a pure
function of its input, and it checkpoints as it goes: a restarted attempt re-emits what the
checkpoint keeps and carries on, so the newest attempt's output is always the whole story.

``demo.review`` drafts an action, waits in ``needs_review``, and once approved applies it once.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from typing import Any

from shared.jobtypes import DEMO_REVIEW, DEMO_STORY

from ..context import JobContext
from ..errors import DeadlineError, InputError, InternalError, JobError, PolicyError, TransientError
from ..registry import JobType

STEP_NAMES = ("research", "outline", "write", "revise", "polish")
VOCABULARY = (
    "the", "tide", "turns", "slowly", "under", "a", "pale", "sky", "and", "engineers", "measure", "every",
    "current", "while", "data", "flows", "through", "quiet", "rooms", "where", "models", "learn", "to",
    "listen", "for", "patterns", "in", "noise", "each", "answer", "opens", "another", "question", "about",
    "power", "cost", "and", "time", "until", "the", "story", "finds", "its", "end",
)
FAILURES: dict[str, type[JobError]] = {
    "input": InputError, "transient": TransientError, "policy": PolicyError,
    "internal": InternalError, "deadline": DeadlineError,
}


def story_words(topic: str, steps: int, per_step: int) -> list[list[str]]:
    """The words of each step: a pure function of the input, so restarts reproduce them exactly."""
    seed = int.from_bytes(hashlib.sha256(topic.encode()).digest()[:8], "big")
    rng = random.Random(seed)
    words = [[rng.choice(VOCABULARY) for _ in range(per_step)] for _ in range(steps)]
    words[0][0] = topic
    return words


def full_text(words: list[list[str]]) -> str:
    return "".join(w + " " for step in words for w in step)


async def story(ctx: JobContext) -> dict[str, Any]:
    """Streams a research → outline → write run word by word at a configurable speed."""
    spec = ctx.input
    fail = spec.get("fail")
    if fail and ctx.attempt <= int(fail["times"]):
        raise FAILURES[fail["class"]](fail.get("message") or f"demo failure {ctx.attempt} of {fail['times']}")
    steps, per_step = int(spec.get("steps", 3)), int(spec.get("tokens_per_step", 40))
    delay = float(spec.get("delay_ms", 30)) / 1000
    words = story_words(spec["topic"], steps, per_step)
    names = [STEP_NAMES[i % len(STEP_NAMES)] for i in range(steps)]

    checkpoint = await ctx.load_checkpoint() or {"step": 0, "word": 0, "text": ""}
    text: str = checkpoint["text"]
    if text:
        await ctx.output(text)  # the newest attempt's output is always the whole story
    start_step, start_word = int(checkpoint["step"]), int(checkpoint["word"])
    for i in range(start_step, steps):
        await ctx.progress(f"{names[i].capitalize()}: {spec['topic']}", step=names[i], fraction=i / steps)
        for j in range(start_word if i == start_step else 0, per_step):
            token = words[i][j] + " "
            await ctx.output(token)
            text += token
            if (j + 1) % 10 == 0:
                await ctx.save_checkpoint({"step": i, "word": j + 1, "text": text})
            if delay:
                await asyncio.sleep(delay)
        await ctx.save_checkpoint({"step": i + 1, "word": 0, "text": text})
    await ctx.progress("Done", step="done", fraction=1.0)
    return {"title": f"{spec['topic']}: a short story", "words": steps * per_step, "steps": names}


async def draft_action(ctx: JobContext) -> dict[str, Any]:
    """Drafts the proposed action; a person approves it before it is applied."""
    spec = ctx.input
    await ctx.progress("Drafting the action", step="draft", fraction=0.0)
    proposal = f"Proposed: {spec['action']}" + (f" on {spec['target']}" if spec.get("target") else "")
    for word in proposal.split(" "):
        await ctx.output(word + " ")
        await asyncio.sleep(float(spec.get("delay_ms", 20)) / 1000)
    await ctx.progress("Waiting for review", step="review", fraction=1.0)
    return {"action": spec["action"], "target": spec.get("target"), "proposal": proposal}


async def apply_action(ctx: JobContext, proposed: Any) -> dict[str, Any]:
    """Applies the approved action; the worker records it on the job as `applied` exactly once."""
    await ctx.progress("Applying the approved action", step="apply", fraction=0.5)
    return {"action": proposed["action"], "target": proposed.get("target"), "effect": "recorded on the job"}


demo_story = JobType(policy=DEMO_STORY, handler=story)
demo_review = JobType(policy=DEMO_REVIEW, handler=draft_action, apply=apply_action)
