"""moto's TransactWriteItems against a large table: moto as shipped and our launcher, in one run.

moto backs up every table a ``TransactWriteItems`` names with a deep copy
before applying it, so a transaction costs time in proportion to the whole
table; ``python -m pipeline.testing.moto`` backs up only the items the
transaction names. This runs the same transactions against both servers:
a table of ``--items`` items (default 3,000), then ``--transactions``
transactions (default 200) shaped like the job store's "record file" (a
conditional ``Put`` of a new item and an ``Update`` of a counts item), every
tenth of them refused (its ``Put`` names an item that exists, so the whole
transaction is cancelled and rolled back). Both servers must end with the same
counts. Printed: seconds for the transactions on each, and the ratio.

Run::

    python benchmarks/moto_transactions.py
    python benchmarks/moto_transactions.py --items 300 --transactions 50   # a quick look
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

import boto3
from botocore.exceptions import ClientError

from pipeline.testing.moto import free_port, moto_process

TABLE = "jobs-bench"


def _client(endpoint: str) -> Any:
    return boto3.client(
        "dynamodb",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
    )


def _fill(dynamodb: Any, items: int) -> None:
    dynamodb.create_table(
        TableName=TABLE,
        KeySchema=[
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    for start in range(0, items, 25):
        dynamodb.batch_write_item(
            RequestItems={
                TABLE: [
                    {"PutRequest": {"Item": _file_item(n)}}
                    for n in range(start, min(start + 25, items))
                ]
            }
        )


def _file_item(n: int) -> dict[str, Any]:
    return {
        "pk": {"S": "exp-bench"},
        "sk": {"S": f"file#{n:06d}"},
        "status": {"S": "DONE"},
        "entriesUploaded": {"N": "1"},
        "paths": {"S": f"part-{n:06d}/rows.jsonl" * 4},
    }


def _transactions(dynamodb: Any, items: int, transactions: int) -> tuple[float, int]:
    """Seconds the transactions took, and how many were refused."""
    refused = 0
    started = time.monotonic()
    for n in range(transactions):
        # Every tenth names an existing item: refused, rolled back.
        file_n = n if n % 10 == 9 else items + n
        try:
            dynamodb.transact_write_items(
                TransactItems=[
                    {
                        "Put": {
                            "TableName": TABLE,
                            "Item": _file_item(file_n),
                            "ConditionExpression": "attribute_not_exists(pk)",
                        }
                    },
                    {
                        "Update": {
                            "TableName": TABLE,
                            "Key": {"pk": {"S": "exp-bench"}, "sk": {"S": "job"}},
                            "UpdateExpression": "ADD filesDone :one",
                            "ExpressionAttributeValues": {":one": {"N": "1"}},
                        }
                    },
                ]
            )
        except ClientError as err:
            if err.response["Error"]["Code"] != "TransactionCanceledException":
                raise
            refused += 1
    return time.monotonic() - started, refused


def measure(command: list[str], port: int, items: int, transactions: int) -> tuple[float, int]:
    """Seconds for the transactions against the moto server ``command`` runs; the final count."""
    with moto_process(command, port) as (endpoint, _):
        dynamodb = _client(endpoint)
        _fill(dynamodb, items)
        seconds, refused = _transactions(dynamodb, items, transactions)
        job = dynamodb.get_item(
            TableName=TABLE, Key={"pk": {"S": "exp-bench"}, "sk": {"S": "job"}}
        )["Item"]
        stored = dynamodb.scan(TableName=TABLE, Select="COUNT")["Count"]
    done = int(job["filesDone"]["N"])
    if done != transactions - refused or stored != items + done + 1:
        msg = f"wrong state: filesDone={done}, {stored} items, {refused} refused"
        raise RuntimeError(msg)
    return seconds, done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--items", type=int, default=3000, help="items in the table first")
    parser.add_argument("--transactions", type=int, default=200)
    args = parser.parse_args(argv)
    print(
        f"{os.cpu_count()} CPUs; {args.transactions} transactions against a table of "
        f"{args.items} items",
        flush=True,
    )
    results = {}
    for label, module in (("moto as shipped", "moto.server"), ("pipeline.testing.moto", None)):
        port = free_port()
        command = (
            [sys.executable, "-m", module, "-H", "127.0.0.1", "-p", str(port)]
            if module
            else [sys.executable, "-m", "pipeline.testing.moto", str(port)]
        )
        seconds, done = measure(command, port, args.items, args.transactions)
        results[label] = seconds
        print(
            f"{label:<24} {seconds:7.2f} s  ({seconds / args.transactions * 1000:6.1f} ms "
            f"per transaction, {done} applied)",
            flush=True,
        )
    ratio = results["pipeline.testing.moto"] / results["moto as shipped"]
    print(f"\nour launcher takes {ratio:.3f}x the time of moto as shipped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
