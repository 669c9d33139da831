"""File result items read back whole: their values, and the seen-path pieces they name.

Split from :mod:`.jobstore` (which writes them): a result's ``seenPaths`` may
be spread over piece items, which only reading every result back at the end
(``entriesMissing``) or forgetting failed ones needs to join.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pipeline._adapters.aws.clients import aws_call
from pipeline._adapters.aws.jobitems import (
    FILE_PREFIX,
    converter,
    decode_item,
    encode,
    unpack_paths,
)
from pipeline._core.accounting import FileResult
from pipeline._errors import AwsRejected

if TYPE_CHECKING:
    from pipeline._adapters.aws.jobstore import JobStore

__all__ = ["file_result_of", "read_file_items"]


async def read_file_items(
    store: JobStore, export_id: str
) -> tuple[list[dict[str, Any]], dict[tuple[str, str, int], bytes]]:
    """The decoded file items, and the seen-path pieces by (fileId, writeId, n)."""
    files: list[dict[str, Any]] = []
    pieces: dict[tuple[str, str, int], bytes] = {}
    start_key: dict[str, Any] | None = None
    while True:
        kwargs: dict[str, Any] = {
            "TableName": store.table,
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :prefix)",
            "ExpressionAttributeValues": {
                ":pk": encode(export_id),
                ":prefix": encode(FILE_PREFIX),
            },
            "ConsistentRead": True,
        }
        if start_key is not None:
            kwargs["ExclusiveStartKey"] = start_key
        response = await aws_call(
            "dynamodb query file results", store.dynamodb.query, policy=store.policy, **kwargs
        )
        for raw in response.get("Items") or []:
            values = decode_item(raw)
            if values.get("kind") == "file":
                files.append(values)
            elif values.get("kind") == "paths":
                key = (values["fileId"], values["writeId"], int(values["piece"]))
                pieces[key] = bytes(values["data"])
        start_key = response.get("LastEvaluatedKey")
        if not start_key:
            return files, pieces


def file_result_of(
    export_id: str,
    values: dict[str, Any],
    pieces: dict[tuple[str, str, int], bytes],
    *,
    with_paths: bool = True,
) -> FileResult:
    file_id, write_id = values["fileId"], values["writeId"]
    blob = bytes(values["seenPaths"])
    for n in range(1, int(values["pieces"]) if with_paths else 1):
        piece = pieces.get((file_id, write_id, n))
        if piece is None:
            msg = f"jobs table: {export_id} file {file_id}: seen-paths piece {n} is missing"
            raise AwsRejected(msg)
        blob += piece
    values = {
        **values,
        "ok": values["status"] == "DONE",
        "seenPaths": unpack_paths(blob) if with_paths else frozenset(),
    }
    return converter.structure(values, FileResult)
