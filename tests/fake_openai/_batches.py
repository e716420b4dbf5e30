"""Files and batches: an uploaded JSONL of requests runs one request at a time on the server's
clock; ``request_counts`` move as it goes; results land in an output file (errors in an error file)."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

from ._controls import Controls, tokens
from ._responses import new_id


@dataclass
class FakeFile:
    id: str
    filename: str
    purpose: str
    content: bytes
    created_at: int = field(default_factory=lambda: int(time.time()))

    def json(self) -> dict[str, Any]:
        return {
            "id": self.id, "object": "file", "bytes": len(self.content), "created_at": self.created_at,
            "filename": self.filename, "purpose": self.purpose, "status": "processed",
            "expires_at": None, "status_details": None,
        }


class FakeBatch:
    def __init__(self, body: dict[str, Any], input_file: FakeFile) -> None:
        self.id = new_id("batch")
        self.body = body
        self.input_file = input_file
        self.created_at = int(time.time())
        self.status = "validating"
        self.times: dict[str, int] = {}
        self.total = self.completed = self.failed = 0
        self.output_file_id: str | None = None
        self.error_file_id: str | None = None
        self.errors: dict[str, Any] | None = None
        self.usage = {"input_tokens": 0, "cached_tokens": 0, "output_tokens": 0}
        self.task: asyncio.Task[None] | None = None

    def json(self) -> dict[str, Any]:
        u = self.usage
        return {
            "id": self.id, "object": "batch", "endpoint": self.body["endpoint"],
            "completion_window": self.body.get("completion_window", "24h"),
            "input_file_id": self.input_file.id, "created_at": self.created_at, "status": self.status,
            "output_file_id": self.output_file_id, "error_file_id": self.error_file_id, "errors": self.errors,
            "metadata": self.body.get("metadata") or {},
            "request_counts": {"total": self.total, "completed": self.completed, "failed": self.failed},
            "usage": {
                "input_tokens": u["input_tokens"],
                "input_tokens_details": {"cached_tokens": u["cached_tokens"]},
                "output_tokens": u["output_tokens"],
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": u["input_tokens"] + u["output_tokens"],
            },
            **{f"{name}_at": self.times.get(name) for name in (
                "in_progress", "finalizing", "completed", "failed", "cancelling", "cancelled", "expired",
            )},
            "expires_at": self.created_at + 24 * 3600,
        }

    def _mark(self, status: str) -> None:
        self.status = status
        self.times[status] = int(time.time())

    async def run(self, controls: Controls, files: dict[str, FakeFile]) -> None:
        try:
            lines = [json.loads(x) for x in self.input_file.content.decode().splitlines() if x.strip()]
            if not lines or any("custom_id" not in x or "body" not in x for x in lines):
                raise ValueError("every line needs custom_id and body")
            if controls.batch_invalid:
                invalid, controls.batch_invalid = controls.batch_invalid, None
                raise ValueError(invalid)
        except ValueError as exc:
            self.errors = {"object": "list", "data": [{"code": "invalid_request", "message": str(exc)}]}
            self._mark("failed")
            return
        self.total = len(lines)
        self._mark("in_progress")
        out: list[str] = []
        err: list[str] = []
        for line in lines:
            if controls.batch_request_delay_s:
                await asyncio.sleep(controls.batch_request_delay_s)
            custom_id = line["custom_id"]
            if custom_id in controls.batch_failures:
                self.failed += 1
                err.append(json.dumps({
                    "id": new_id("batch_req"), "custom_id": custom_id, "response": None,
                    "error": {"code": "server_error", "message": "simulated request failure"},
                }))
                continue
            body = line["body"]
            text = controls.reply(body)
            n_out = len(tokens(text))
            self.usage["input_tokens"] += controls.input_tokens
            self.usage["cached_tokens"] += controls.cached_tokens
            self.usage["output_tokens"] += n_out
            response = _completed_response(body, text, controls, n_out)
            out.append(json.dumps({
                "id": new_id("batch_req"), "custom_id": custom_id,
                "response": {"status_code": 200, "request_id": new_id("req"), "body": response},
                "error": None,
            }))
            self.completed += 1
        self._mark("finalizing")
        for rows, attr, name in ((out, "output_file_id", "output"), (err, "error_file_id", "errors")):
            if rows:
                f = FakeFile(new_id("file"), f"batch_{self.id}_{name}.jsonl", "batch_output",
                             ("\n".join(rows) + "\n").encode())
                files[f.id] = f
                setattr(self, attr, f.id)
        self._mark("completed")

    def cancel(self) -> None:
        if self.status in ("completed", "failed", "cancelled", "expired"):
            return
        if self.task is not None:
            self.task.cancel()
        self._mark("cancelled")


def _completed_response(body: dict[str, Any], text: str, controls: Controls, n_out: int) -> dict[str, Any]:
    return {
        "id": new_id("resp"), "object": "response", "created_at": int(time.time()), "status": "completed",
        "model": body.get("model", "gpt-fake"), "parallel_tool_calls": True, "tool_choice": "auto",
        "tools": [],
        "error": None, "incomplete_details": None, "metadata": body.get("metadata") or {},
        "output": [{
            "id": new_id("msg"), "type": "message", "role": "assistant", "status": "completed",
            "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
        }],
        "usage": {
            "input_tokens": controls.input_tokens,
            "input_tokens_details": {"cached_tokens": controls.cached_tokens, "cache_write_tokens": 0},
            "output_tokens": n_out, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": controls.input_tokens + n_out,
        },
    }
