"""The dead-letter calls on a running service: look, redrive, delete (contract 8)."""

from __future__ import annotations

import functools
import json

import httpx

from pipeline._adapters.aws import sqs
from pipeline.testing.demo import build_zip, metadata_for
from tests.support.stack import Stack, open_stack
from tests.support.waiting import eventually

ADMIN = "admin-token-dlq"
AUTH = {"Authorization": f"Bearer {ADMIN}"}
POISON = "this is not json"
GOOD = json.dumps({"exportIds": ["exp-dlq"], "correlationId": "c-dlq"})


async def _dead_lettered_by_the_service(stack: Stack, dlq: str) -> None:
    """Send a poison body and wait until the service has dead-lettered it."""
    await stack.send_raw(POISON)
    await eventually(functools.partial(stack.queue_depth, dlq), within=30)


async def test_look_redrive_and_delete(aws_endpoint: str) -> None:
    """A look shows both dead letters (the service's with its reason) and leaves them;
    redrive moves the good one (its job completes) and keeps the poison one; delete
    removes it by ID (204), and a second delete is 404."""
    entries = [("a.txt", b"alpha")]
    async with open_stack(aws_endpoint) as stack:
        stack.simulator.add_export("exp-dlq", [("p.zip", build_zip(entries))])
        await stack.seed("exp-dlq", metadata_for(entries))
        dlq = await sqs.dead_letter_queue_url(stack.aws.sqs, stack.urls.export_jobs_url)
        assert dlq is not None
        base, stop = await stack.serve_http(ADMIN_TOKEN=ADMIN)
        await _dead_lettered_by_the_service(stack, dlq)
        await sqs.send(stack.aws.sqs, dlq, GOOD)
        async with httpx.AsyncClient(base_url=base, headers=AUTH) as client:
            first = (await client.get("/dlq/export-jobs")).json()["messages"]
            again = (await client.get("/dlq/export-jobs")).json()["messages"]
            redriven = await client.post("/dlq/export-jobs/redrive", json={"limit": 10})
            job = await stack.wait_final("exp-dlq")
            (kept,) = (await client.get("/dlq/export-jobs")).json()["messages"]
            deleted = await client.delete(f"/dlq/export-jobs/{kept['messageId']}")
            twice = await client.delete(f"/dlq/export-jobs/{kept['messageId']}")
            empty = (await client.get("/dlq/export-jobs")).json()
        stop.set()
    by_body = {message["body"]: message for message in first}
    assert set(by_body) == {POISON, GOOD}
    assert "not valid JSON" in by_body[POISON]["reason"]
    assert by_body[GOOD]["reason"] is None
    assert {"messageId", "sentAt", "receiveCount", "body", "reason"} == set(by_body[GOOD])
    assert {message["messageId"] for message in again} == {
        message["messageId"] for message in first
    }
    assert (redriven.status_code, redriven.json()) == (200, {"moved": 1, "kept": 1})
    assert job.correlation_id == "c-dlq"
    assert kept["body"] == POISON
    assert (deleted.status_code, deleted.content) == (204, b"")
    assert twice.status_code == 404
    assert "error" in twice.json()
    assert empty == {"messages": []}


async def test_dead_letter_calls_need_the_token_and_a_known_queue(aws_endpoint: str) -> None:
    """Without the token the calls are 401 with a Bearer challenge; an unknown queue, or
    one this process has no URL for, is 404; a bad limit is 400."""
    async with open_stack(aws_endpoint) as stack:
        base, stop = await stack.serve_http(ADMIN_TOKEN=ADMIN)
        async with httpx.AsyncClient(base_url=base) as client:
            anonymous = [
                await client.get("/dlq/export-jobs"),
                await client.post("/dlq/export-jobs/redrive"),
                await client.delete("/dlq/export-jobs/m-1"),
            ]
            unknown = await client.get("/dlq/nope", headers=AUTH)
            unconfigured = await client.get("/dlq/download-tasks", headers=AUTH)
            bad_limit = await client.post(
                "/dlq/export-jobs/redrive", json={"limit": 0}, headers=AUTH
            )
        stop.set()
    assert [answer.status_code for answer in anonymous] == [401, 401, 401]
    assert all(answer.headers["WWW-Authenticate"].startswith("Bearer") for answer in anonymous)
    assert (unknown.status_code, unconfigured.status_code) == (404, 404)
    assert "export-jobs" in unknown.json()["error"]
    assert bad_limit.status_code == 400
    assert "limit" in bad_limit.json()["error"]
