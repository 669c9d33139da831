"""The project's moto launcher over real HTTP: transactions backed up by the items they touch,
connections kept, update expressions answered as moto does."""

from __future__ import annotations

import re
import socket
import uuid
from typing import Any
from urllib.parse import urlsplit

import pytest
from botocore.exceptions import ClientError

from pipeline._adapters.aws.clients import AwsClients
from pipeline.testing import moto
from pipeline.testing.moto import free_port


async def _table(clients: AwsClients, *, range_key: bool) -> str:
    name = f"tx-{uuid.uuid4().hex}"
    keys = [("pk", "HASH"), ("sk", "RANGE")] if range_key else [("pk", "HASH")]
    await clients.dynamodb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": a, "KeyType": t} for a, t in keys],
        AttributeDefinitions=[{"AttributeName": a, "AttributeType": "S"} for a, _ in keys],
        BillingMode="PAY_PER_REQUEST",
    )
    return name


@pytest.fixture
async def tables(clients: AwsClients) -> tuple[str, str]:
    """A table with a range key holding a job and two files, and a hash-only table holding one."""
    ranged = await _table(clients, range_key=True)
    hashed = await _table(clients, range_key=False)
    for sk, count in (("job", "2"), ("file#1", "1"), ("file#2", "1")):
        await clients.dynamodb.put_item(
            TableName=ranged,
            Item={"pk": {"S": "exp"}, "sk": {"S": sk}, "count": {"N": count}},
        )
    await clients.dynamodb.put_item(
        TableName=hashed, Item={"pk": {"S": "one"}, "count": {"N": "7"}}
    )
    return ranged, hashed


def _key(table: str, pk: str, sk: str | None) -> dict[str, Any]:
    key = {"pk": {"S": pk}, **({"sk": {"S": sk}} if sk else {})}
    return {"TableName": table, "Key": key}


def _writes(ranged: str, hashed: str) -> list[dict[str, Any]]:
    """Every kind of write, on both tables: an update, a new item, a delete, a new hash key."""
    add_one = {"UpdateExpression": "ADD #c :one", "ExpressionAttributeNames": {"#c": "count"}}
    add_one["ExpressionAttributeValues"] = {":one": {"N": "1"}}  # type: ignore[assignment]
    return [
        {"Update": {**_key(ranged, "exp", "job"), **add_one}},
        {
            "Put": {
                "TableName": ranged,
                "Item": {"pk": {"S": "exp"}, "sk": {"S": "file#3"}, "count": {"N": "1"}},
                "ConditionExpression": "attribute_not_exists(pk)",
            }
        },
        {"Delete": _key(ranged, "exp", "file#2")},
        {"Update": {**_key(hashed, "one", None), **add_one}},
        {"Put": {"TableName": hashed, "Item": {"pk": {"S": "two"}, "count": {"N": "1"}}}},
    ]


async def _contents(clients: AwsClients, *names: str) -> list[list[dict[str, Any]]]:
    out = []
    for name in names:
        items = (await clients.dynamodb.scan(TableName=name, ConsistentRead=True))["Items"]
        out.append(sorted(items, key=lambda item: (item["pk"]["S"], item.get("sk", {}).get("S"))))
    return out


async def test_cancelled_transaction_leaves_every_item_as_before(
    clients: AwsClients, tables: tuple[str, str]
) -> None:
    """A transaction whose last condition fails leaves updated, new and deleted items as before."""
    ranged, hashed = tables
    before = await _contents(clients, ranged, hashed)
    failing = {
        "ConditionCheck": {
            **_key(ranged, "exp", "file#1"),
            "ConditionExpression": "attribute_not_exists(pk)",
        }
    }
    with pytest.raises(ClientError) as caught:
        await clients.dynamodb.transact_write_items(
            TransactItems=[*_writes(ranged, hashed), failing]
        )
    assert caught.value.response["Error"]["Code"] == "TransactionCanceledException"
    assert await _contents(clients, ranged, hashed) == before


async def test_invalid_transaction_leaves_every_item_as_before(
    clients: AwsClients, tables: tuple[str, str]
) -> None:
    """A transaction refused as invalid after some writes (two on one item) undoes those writes."""
    ranged, hashed = tables
    before = await _contents(clients, ranged, hashed)
    again = {"Delete": _key(hashed, "one", None)}
    with pytest.raises(ClientError) as caught:
        await clients.dynamodb.transact_write_items(TransactItems=[*_writes(ranged, hashed), again])
    assert caught.value.response["Error"]["Code"] == "ValidationException"
    assert await _contents(clients, ranged, hashed) == before


async def test_successful_transaction_applies_every_write(
    clients: AwsClients, tables: tuple[str, str]
) -> None:
    """A transaction that succeeds applies each write; the same again is cancelled, changes none."""
    ranged, hashed = tables
    await clients.dynamodb.transact_write_items(TransactItems=_writes(ranged, hashed))
    after = await _contents(clients, ranged, hashed)
    assert after == [
        [
            {"pk": {"S": "exp"}, "sk": {"S": "file#1"}, "count": {"N": "1"}},
            {"pk": {"S": "exp"}, "sk": {"S": "file#3"}, "count": {"N": "1"}},
            {"pk": {"S": "exp"}, "sk": {"S": "job"}, "count": {"N": "3"}},
        ],
        [
            {"pk": {"S": "one"}, "count": {"N": "8"}},
            {"pk": {"S": "two"}, "count": {"N": "1"}},
        ],
    ]
    # The same writes again: file#3 exists now, so the Put's condition cancels the rest.
    with pytest.raises(ClientError):
        await clients.dynamodb.transact_write_items(TransactItems=_writes(ranged, hashed))
    assert await _contents(clients, ranged, hashed) == after


async def test_upload_part_to_an_aborted_upload_answers_no_such_upload(
    clients: AwsClients,
) -> None:
    """UploadPart after the upload was aborted fails with S3's 404 NoSuchUpload, not a 500."""
    bucket = f"up-{uuid.uuid4().hex}"
    await clients.s3.create_bucket(Bucket=bucket)
    started = await clients.s3.create_multipart_upload(Bucket=bucket, Key="k")
    upload = {"Bucket": bucket, "Key": "k", "UploadId": started["UploadId"]}
    await clients.s3.upload_part(**upload, PartNumber=1, Body=b"first")
    await clients.s3.abort_multipart_upload(**upload)
    with pytest.raises(ClientError) as refused:
        await clients.s3.upload_part(**upload, PartNumber=2, Body=b"second")
    assert refused.value.response["Error"]["Code"] == "NoSuchUpload"
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def _exchange(sock: socket.socket, request: bytes) -> tuple[bytes, bytes]:
    """Send one request on ``sock``; the answer's head and its body (by Content-Length)."""
    sock.sendall(request)
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before an answer: {received!r}"
        received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed in the middle of an answer"
        body += chunk
    assert len(body) == length, "more bytes than the answer's Content-Length"
    return head, body


def _sqs_list_queues(host: str) -> bytes:
    body = b"Action=ListQueues&Version=2012-11-05"
    return (
        f"POST / HTTP/1.1\r\nHost: {host}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        "Authorization: AWS4-HMAC-SHA256 Credential=testing/20261206/us-east-1/sqs/aws4_request, "
        "SignedHeaders=host, Signature=0\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def test_connection_kept_between_requests(aws_endpoint: str) -> None:
    """Three requests on one connection get three whole answers, none saying it closes."""
    host, port = urlsplit(aws_endpoint).netloc.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        for _ in range(3):
            head, body = _exchange(sock, _sqs_list_queues(f"{host}:{port}"))
            assert head.startswith(b"HTTP/1.1 200"), head
            assert b"connection: close" not in head.lower()
            assert b"ListQueues" in body


def _moto_api_get(host: str, length: int) -> bytes:
    """A GET of moto's own API announcing a body, which that API answers without reading."""
    return f"GET /moto-api/ HTTP/1.1\r\nHost: {host}\r\nContent-Length: {length}\r\n\r\n".encode()


def test_body_left_unread_is_not_read_as_the_next_request(aws_endpoint: str) -> None:
    """A body its answer left unread is skipped to its end: the request after it on the
    same connection gets its own answer."""
    netloc = urlsplit(aws_endpoint).netloc
    host, port = netloc.split(":")
    unread = b"Action=ListQueues&" * 10_000
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        head, _ = _exchange(sock, _moto_api_get(netloc, len(unread)) + unread)
        assert head.startswith(b"HTTP/1.1 200"), head
        head, body = _exchange(sock, _sqs_list_queues(netloc))
        assert head.startswith(b"HTTP/1.1 200"), head
        assert b"ListQueuesResponse" in body


@pytest.mark.parametrize(
    "expression",
    ["SET #c = :v SET #d = :v", "ADD #c :one ADD #d :one", "REMOVE #c REMOVE #d"],
)
async def test_update_expressions_with_a_repeated_clause_are_refused(
    clients: AwsClients, tables: tuple[str, str], expression: str
) -> None:
    """A clause given twice is refused, as often as it is sent (the parsed text is kept)."""
    ranged, _ = tables
    names = {"#c": "count", "#d": "other"}
    values = {":v": {"S": "x"}, ":one": {"N": "1"}}
    used = {k: v for k, v in values.items() if k in expression}
    for _ in range(2):
        with pytest.raises(ClientError, match="can only be used once"):
            await clients.dynamodb.update_item(
                **_key(ranged, "exp", "job"),
                UpdateExpression=expression,
                ExpressionAttributeNames=names,
                **({"ExpressionAttributeValues": used} if used else {}),
            )


async def test_a_long_update_expression_applies_each_time(
    clients: AwsClients, tables: tuple[str, str]
) -> None:
    """The same long SET/ADD/REMOVE expression twice: both apply, the second on the first's item."""
    ranged, _ = tables
    sets = ", ".join(f"#a{i} = if_not_exists(#a{i}, :v{i})" for i in range(12))
    names = {f"#a{i}": f"attr{i}" for i in range(12)} | {"#c": "count", "#g": "gone"}
    values = {f":v{i}": {"N": str(i)} for i in range(12)} | {":one": {"N": "1"}}
    for _ in range(2):
        await clients.dynamodb.update_item(
            **_key(ranged, "exp", "job"),
            UpdateExpression=f"SET {sets} ADD #c :one REMOVE #g",
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
        )
    item = (await clients.dynamodb.get_item(**_key(ranged, "exp", "job")))["Item"]
    assert item["count"] == {"N": "4"}
    assert [item[f"attr{i}"] for i in range(12)] == [{"N": str(i)} for i in range(12)]


def test_free_port_is_below_the_ports_of_outgoing_connections() -> None:
    """free_port gives a port nothing holds, below the kernel's range for outgoing
    connections, which another process's connect could take before the server binds."""
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
    if moto._outgoing_ports_start() - moto.LISTEN_PORTS.start >= 1_000:
        assert port in moto.LISTEN_PORTS
        assert port < moto._outgoing_ports_start()


def test_free_port_passes_over_a_port_in_use(monkeypatch: pytest.MonkeyPatch) -> None:
    """A port someone listens on is not given out; the next pick is."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        picks = iter([busy, moto.LISTEN_PORTS.start + 7])
        monkeypatch.setattr(moto._pick, "randrange", lambda start, stop: next(picks))
        assert free_port() == moto.LISTEN_PORTS.start + 7
