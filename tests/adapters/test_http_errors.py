"""Every error the HTTP side answers is JSON; the bearer scheme is read as RFC 7235 says."""

from __future__ import annotations

import httpx

from tests.support.stack import open_stack

ADMIN = "admin-token-errors"


async def test_errors_are_json_and_bearer_is_case_insensitive(aws_endpoint: str) -> None:
    """404, 405 (with Allow) and 413 answer {"error": ...}; 401 carries the Bearer challenge;
    ``bearer`` in lower case is accepted; /metrics names its charset once."""
    async with open_stack(aws_endpoint) as stack:
        base, stop = await stack.serve_http(ADMIN_TOKEN=ADMIN)
        async with httpx.AsyncClient(base_url=base) as client:
            missing = await client.get("/no/such/path")
            method = await client.delete("/health")
            huge = await client.post(
                "/jobs",
                content=b"x" * (2 * 1024 * 1024),
                headers={"Authorization": f"Bearer {ADMIN}"},
            )
            wrong = await client.post("/jobs/exp-x/cancel", headers={"Authorization": "Bearer no"})
            lower = await client.post(
                "/jobs/exp-x/cancel", headers={"Authorization": f"bearer {ADMIN}"}
            )
            metrics = await client.get("/metrics")
        stop.set()
    for answer, status in ((missing, 404), (method, 405), (huge, 413), (wrong, 401)):
        assert answer.status_code == status
        assert answer.headers["content-type"].startswith("application/json")
        assert answer.json()["error"]
    assert "GET" in method.headers["Allow"]
    assert wrong.headers["WWW-Authenticate"].startswith("Bearer")
    # Accepted: the export is unknown, which is 404, not 401.
    assert lower.status_code == 404
    assert metrics.headers["content-type"].count("charset") == 1
