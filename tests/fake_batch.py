"""A fake OpenAI Batch API on 127.0.0.1 (files + batches endpoints), beside the chat endpoint of `fake_openai`.

The same real HTTP server as `fake_openai.FakeOpenAIServer`, with the endpoints a batch client
uses: `POST /v1/files` (multipart upload, purpose batch), `GET /v1/files/{id}/content`,
`POST /v1/batches`, `GET /v1/batches` (newest first, `after` / `limit` / `has_more`),
`GET /v1/batches/{id}`, `POST /v1/batches/{id}/cancel`. Each line of a batch is answered by the
chat endpoint's own logic (`FakeOpenAI._complete`: same texts, same billing, `honour_n` alike),
so a batch run and an online run of one recipe give the same records.

A batch is `validating` when created, `in_progress` for `polls_to_finish` retrieves (never while
`hold` is set), then ends. Faults (`BatchBehaviour`): the next `fail_validation` batches fail
validation (status `failed`, no files, nothing billed); the next batch expires after answering
`expire_after` lines (the rest in the error file with code `batch_expired`); every
`error_every`-th line of a batch goes to the error file as a 500; every `no_choices_every`-th is
a 200 without choices; `unknown_lines` extra output lines carry ids the input never had; the
chat behaviour's `honour_n=False` answers one choice per line. `BatchStats` counts uploads,
batches created, how often each custom_id was submitted in a created batch, billed lines and
choices, cancels and retrieves.

    with FakeBatchServer(BatchBehaviour(error_every=5)) as srv: ...   # srv.url, srv.batch.stats
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from fake_openai import FakeOpenAI, FakeOpenAIServer
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


@dataclass
class BatchBehaviour:
    polls_to_finish: int = 1
    hold: bool = False
    fail_validation: int = 0
    expire_after: int | None = None
    error_every: int = 0
    no_choices_every: int = 0
    unknown_lines: int = 0


@dataclass
class BatchStats:
    uploads: int = 0
    created: int = 0
    submitted: Counter = field(default_factory=Counter)  # custom_id -> times in a created batch
    billed_lines: int = 0
    billed_choices: int = 0
    cancels: int = 0
    retrieves: int = 0
    lists: int = 0
    statuses: Counter = field(default_factory=Counter)  # final status of each batch


def _multipart_file(body: bytes, content_type: str) -> tuple[bytes, str]:
    """(file bytes, purpose) of a multipart/form-data upload (no python-multipart needed)."""
    boundary = content_type.split("boundary=", 1)[1].strip('"').encode()
    data, purpose = b"", ""
    for part in body.split(b"--" + boundary):
        head, _, content = part.partition(b"\r\n\r\n")
        content = content[:-2] if content.endswith(b"\r\n") else content
        if b'name="file"' in head:
            data = content
        elif b'name="purpose"' in head:
            purpose = content.decode()
    return data, purpose


class FakeBatch:
    """Files and batches, answered by a `FakeOpenAI`'s chat logic."""

    def __init__(self, chat: FakeOpenAI, behaviour: BatchBehaviour):
        self.chat, self.behaviour, self.stats = chat, behaviour, BatchStats()
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self._lines: dict[str, list[dict[str, Any]]] = {}
        self._polls: Counter = Counter()

    def routes(self) -> list[Route]:
        return [Route("/v1/files", self.upload, methods=["POST"]),
                Route("/v1/files/{file_id}/content", self.content, methods=["GET"]),
                Route("/v1/batches", self.create, methods=["POST"]),
                Route("/v1/batches", self.list, methods=["GET"]),
                Route("/v1/batches/{batch_id}", self.retrieve, methods=["GET"]),
                Route("/v1/batches/{batch_id}/cancel", self.cancel, methods=["POST"])]

    def _denied(self, request: Request) -> Response | None:
        want = self.chat.behaviour.require_key
        key = request.headers.get("authorization", "").removeprefix("Bearer ")
        if want is not None and key != want:
            return JSONResponse({"error": {"message": f"Incorrect API key provided: {key}"}}, status_code=401)
        return None

    def _file(self, data: bytes, purpose: str) -> dict[str, Any]:
        file_id = f"file-{len(self.files) + 1}"
        self.files[file_id] = data
        return {"id": file_id, "object": "file", "bytes": len(data), "created_at": int(time.time()),
                "filename": f"{file_id}.jsonl", "purpose": purpose, "status": "processed"}

    async def upload(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        data, purpose = _multipart_file(await request.body(), request.headers["content-type"])
        self.stats.uploads += 1
        return JSONResponse(self._file(data, purpose or "batch"))

    async def content(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        file_id = request.path_params["file_id"]
        if file_id not in self.files:
            return JSONResponse({"error": {"message": f"no file {file_id}"}}, status_code=404)
        return Response(self.files[file_id], media_type="application/octet-stream")

    async def create(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        body = await request.json()
        if body.get("input_file_id") not in self.files:
            return JSONResponse({"error": {"message": "no such input file"}}, status_code=400)
        batch_id = f"batch_{len(self.batches) + 1:04d}"
        lines = [json.loads(line) for line in self.files[body["input_file_id"]].splitlines() if line.strip()]
        batch = {"id": batch_id, "object": "batch", "endpoint": body["endpoint"], "errors": None,
                 "input_file_id": body["input_file_id"], "completion_window": body["completion_window"],
                 "status": "validating", "output_file_id": None, "error_file_id": None,
                 "created_at": int(time.time()), "metadata": body.get("metadata"),
                 "request_counts": {"total": len(lines), "completed": 0, "failed": 0}}
        self.batches[batch_id] = batch
        self._lines[batch_id] = lines
        self.stats.created += 1
        self.stats.submitted.update(line["custom_id"] for line in lines)
        return JSONResponse(batch)

    async def list(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        self.stats.lists += 1
        newest = sorted(self.batches.values(), key=lambda b: b["id"], reverse=True)
        after, limit = request.query_params.get("after"), int(request.query_params.get("limit", 20))
        if after is not None:
            newest = newest[[b["id"] for b in newest].index(after) + 1:]
        page = newest[:limit]
        return JSONResponse({"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
                             "last_id": page[-1]["id"] if page else None, "has_more": len(newest) > limit})

    async def retrieve(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        batch = self.batches[request.path_params["batch_id"]]
        self.stats.retrieves += 1
        if batch["status"] == "cancelling":
            self._end(batch, "cancelled", answered=0)
        elif batch["status"] in ("validating", "in_progress") and not self.behaviour.hold:
            self._polls[batch["id"]] += 1
            if self._polls[batch["id"]] >= self.behaviour.polls_to_finish:
                self._finish(batch)
            else:
                batch["status"] = "in_progress"
                total = batch["request_counts"]["total"]
                batch["request_counts"]["completed"] = total * self._polls[batch["id"]] // (self.behaviour.polls_to_finish + 1)
        return JSONResponse(batch)

    async def cancel(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        batch = self.batches[request.path_params["batch_id"]]
        if batch["status"] not in ("validating", "in_progress"):
            return JSONResponse({"error": {"message": f"cannot cancel a batch that is {batch['status']}"}},
                                status_code=400)
        self.stats.cancels += 1
        batch["status"] = "cancelling"
        return JSONResponse(batch)

    # ------------------------------------------------------------------------- answering
    def _finish(self, batch: dict[str, Any]) -> None:
        b = self.behaviour
        if b.fail_validation > 0:
            b.fail_validation -= 1
            batch["status"] = "failed"
            batch["errors"] = {"object": "list", "data": [{"code": "invalid_request", "line": 1, "param": "body",
                                                           "message": "the batch failed validation"}]}
            self.stats.statuses["failed"] += 1
            return
        answered = len(self._lines[batch["id"]])
        status = "completed"
        if b.expire_after is not None:
            answered, status, b.expire_after = min(answered, b.expire_after), "expired", None
        self._end(batch, status, answered)

    def _end(self, batch: dict[str, Any], status: str, answered: int) -> None:
        out, errors = [], []
        lines = self._lines[batch["id"]]
        for i, line in enumerate(lines):
            row = {"id": f"batch_req_{batch['id']}_{i}", "custom_id": line["custom_id"]}
            if i >= answered:
                code = "batch_expired" if status == "expired" else "batch_cancelled"
                errors.append({**row, "response": None, "error": {"code": code, "message": f"not run: {status}"}})
            elif self.behaviour.error_every and (i + 1) % self.behaviour.error_every == 0:
                errors.append({**row, "error": None, "response": {"status_code": 500, "request_id": f"req_{i}", "body": {
                    "error": {"message": "server error", "type": "server_error", "code": None}}}})
            else:
                out.append({**row, "error": None, "response": self._answer(line, i)})
        for j in range(self.behaviour.unknown_lines):
            out.append({"id": f"x{j}", "custom_id": f"not-a-known-id-{j}", "error": None,
                        "response": {"status_code": 200, "request_id": "x", "body": {"choices": []}}})
        batch["status"] = status
        batch["request_counts"] = {"total": len(lines), "completed": len(out) - self.behaviour.unknown_lines,
                                   "failed": len(errors)}
        if out:
            batch["output_file_id"] = self._file(_jsonl(out), "batch_output")["id"]
        if errors:
            batch["error_file_id"] = self._file(_jsonl(errors), "batch_output")["id"]
        self.stats.statuses[status] += 1

    def _answer(self, line: dict[str, Any], i: int) -> dict[str, Any]:
        if self.behaviour.no_choices_every and (i + 1) % self.behaviour.no_choices_every == 0:
            body = {"id": f"chatcmpl-b{i}", "object": "chat.completion", "choices": [],
                    "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}}
            return {"status_code": 200, "request_id": f"req_{i}", "body": body}
        body = json.loads(self.chat._complete(line["body"], None, time.monotonic()).body)
        self.stats.billed_lines += 1
        self.stats.billed_choices += len(body["choices"])
        return {"status_code": 200, "request_id": f"req_{i}", "body": body}


def _jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


class FakeBatchServer(FakeOpenAIServer):
    """`FakeOpenAIServer` (chat completions, `**behaviour`) with the files and batches endpoints added."""

    def __init__(self, batch: BatchBehaviour | None = None, **behaviour: Any):
        super().__init__(**behaviour)
        self.batch = FakeBatch(self.fake, batch or BatchBehaviour())
        self.fake.app.router.routes[:0] = self.batch.routes()
