"""The AWS boundary: clients, error translation, and the retried call."""

from __future__ import annotations

import socket

import pytest
import trio
from botocore.exceptions import ClientError, EndpointConnectionError, ParamValidationError

import pipeline._adapters.aws.clients as aws_module
from pipeline._adapters.aws.clients import (
    AwsClients,
    aws_call,
    error_code,
    open_aws_clients,
    tls_verify,
    translate_aws_errors,
)
from pipeline._core.backoff import Backoff
from pipeline._errors import AwsRejected, AwsUnavailable, RetriesExhausted

FAST = Backoff(max_attempts=3, base=0.001, cap=0.01)


def closed_port() -> int:
    """A loopback port that nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def client_error(code: str, status: int, operation: str = "PutItem") -> ClientError:
    """A ClientError as botocore builds it from a parsed error response."""
    response = {
        "Error": {"Code": code, "Message": f"{code} happened\nsecond line"},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(response, operation)


def test_public_surface_is_complete() -> None:
    """Every name in __all__ exists, once."""
    assert len(set(aws_module.__all__)) == len(aws_module.__all__)
    for name in aws_module.__all__:
        assert hasattr(aws_module, name)


class TestTranslate:
    async def test_no_such_bucket_is_rejected_with_its_code(self, clients: AwsClients) -> None:
        """A real NoSuchBucket becomes AwsRejected carrying the code, from the ClientError."""
        with pytest.raises(AwsRejected) as info, translate_aws_errors("s3 put object"):
            await clients.s3.put_object(Bucket="no-such-bucket-xyz", Key="k", Body=b"x")
        assert info.value.code == "NoSuchBucket"
        assert error_code(info.value) == "NoSuchBucket"
        assert str(info.value).startswith("s3 put object: NoSuchBucket (HTTP 404)")
        assert isinstance(info.value.__cause__, ClientError)

    @pytest.mark.parametrize(
        ("code", "status"),
        [
            ("ThrottlingException", 400),
            ("ProvisionedThroughputExceededException", 400),
            ("Throttling", 400),
            ("RequestLimitExceeded", 400),
            ("SlowDown", 503),
            ("RequestTimeout", 400),
            ("InternalError", 500),
            ("SomethingNew", 502),
            ("TooManyRequests", 429),
        ],
    )
    def test_throttling_and_5xx_are_unavailable(self, code: str, status: int) -> None:
        """Throttling codes, 429 and 5xx become AwsUnavailable with the code, on one line."""
        with pytest.raises(AwsUnavailable) as info, translate_aws_errors("dynamodb put"):
            raise client_error(code, status)
        assert info.value.code == code
        assert info.value.transient
        assert "\n" not in str(info.value)
        assert str(info.value).startswith(f"dynamodb put: {code}")

    def test_conditional_check_is_rejected(self) -> None:
        """ConditionalCheckFailedException is permanent and keeps its code."""
        with pytest.raises(AwsRejected) as info, translate_aws_errors("update"):
            raise client_error("ConditionalCheckFailedException", 400)
        assert info.value.code == "ConditionalCheckFailedException"
        assert not info.value.transient

    @pytest.mark.parametrize(
        ("reasons", "kind", "code"),
        [
            (["ConditionalCheckFailed", "None"], AwsRejected, "ConditionalCheckFailedException"),
            (["None", "TransactionConflict"], AwsUnavailable, "TransactionCanceledException"),
            (["ThrottlingError", "None"], AwsUnavailable, "TransactionCanceledException"),
            (["ValidationError", "None"], AwsRejected, "TransactionCanceledException"),
        ],
    )
    def test_cancelled_transactions_by_reason(
        self, reasons: list[str], kind: type[Exception], code: str
    ) -> None:
        """A cancelled transaction reads as its items' reasons: a failed condition, or transient."""
        error = client_error("TransactionCanceledException", 400, "TransactWriteItems")
        error.response["CancellationReasons"] = [{"Code": reason} for reason in reasons]
        with pytest.raises(kind) as info, translate_aws_errors("dynamodb record file"):
            raise error
        assert getattr(info.value, "code", None) == code

    def test_connection_errors_are_unavailable(self) -> None:
        """botocore's connection errors become AwsUnavailable without a code."""
        with pytest.raises(AwsUnavailable) as info, translate_aws_errors("sqs receive"):
            raise EndpointConnectionError(endpoint_url="http://127.0.0.1:1")
        assert info.value.code is None
        assert isinstance(info.value.__cause__, EndpointConnectionError)

    async def test_parameter_errors_are_rejected(self, clients: AwsClients) -> None:
        """botocore's client-side validation errors become AwsRejected without a code."""
        with pytest.raises(AwsRejected) as info, translate_aws_errors("s3 put object"):
            await clients.s3.put_object(Bucket="some-bucket")
        assert info.value.code is None
        assert isinstance(info.value.__cause__, ParamValidationError)

    def test_other_errors_pass_through(self) -> None:
        """Errors that are not botocore's are not translated."""
        with pytest.raises(ValueError, match="ours"), translate_aws_errors("x"):
            raise ValueError("ours")

    async def test_cancellation_passes_through(self) -> None:
        """trio.Cancelled is not caught by the translator."""
        with trio.move_on_after(0) as scope, translate_aws_errors("x"):
            await trio.sleep_forever()
        assert scope.cancelled_caught


class TestAwsCall:
    async def test_transient_errors_are_retried(self) -> None:
        """A throttled call is tried again and its result returned."""
        calls: list[int] = []

        async def flaky(value: int) -> int:
            calls.append(value)
            if len(calls) < 3:
                raise client_error("ThrottlingException", 400)
            return value * 2

        assert await aws_call("flaky", flaky, 21, policy=FAST) == 42
        assert calls == [21, 21, 21]

    async def test_permanent_errors_are_not_retried(self) -> None:
        """A rejected call raises AwsRejected after one attempt."""
        calls = 0

        async def refused() -> None:
            nonlocal calls
            calls += 1
            raise client_error("AccessDenied", 403)

        with pytest.raises(AwsRejected):
            await aws_call("refused", refused, policy=FAST)
        assert calls == 1

    async def test_unreachable_endpoint_exhausts_retries(self) -> None:
        """A refused connection is retried and ends as RetriesExhausted from AwsUnavailable."""
        endpoint = f"http://127.0.0.1:{closed_port()}"
        async with open_aws_clients(region="us-east-1", endpoint_url=endpoint, pool_size=1) as c:
            with pytest.raises(RetriesExhausted) as info:
                await aws_call("s3 list buckets", c.s3.list_buckets, policy=FAST)
        assert isinstance(info.value.__cause__, AwsUnavailable)
        assert "s3 list buckets" in str(info.value)
        assert error_code(info.value) is None

    async def test_error_code_under_retries_exhausted(self) -> None:
        """error_code finds the throttling code beneath RetriesExhausted."""

        async def throttled() -> None:
            raise client_error("SlowDown", 503)

        with pytest.raises(RetriesExhausted) as info:
            await aws_call("s3 put", throttled, policy=FAST)
        assert error_code(info.value) == "SlowDown"


class TestClients:
    async def test_clients_talk_to_the_endpoint(self, clients: AwsClients) -> None:
        """Each client reaches its service on the moto server."""
        await aws_call("s3 list", clients.s3.list_buckets, policy=FAST)
        await aws_call("sqs list", clients.sqs.list_queues, policy=FAST)
        await aws_call("ddb list", clients.dynamodb.list_tables, policy=FAST)

    async def test_sqs_read_timeout_outlasts_a_long_poll(self, clients: AwsClients) -> None:
        """The SQS client's read timeout is above SQS's 20 s long poll; botocore never retries."""
        config = clients.sqs.meta.config
        assert config.read_timeout > 20
        assert config.retries["total_max_attempts"] == 1

    async def test_pool_size_must_be_positive(self) -> None:
        """A pool of zero connections is refused up front."""
        with pytest.raises(ValueError, match="pool_size"):
            async with open_aws_clients(region="us-east-1", endpoint_url=None, pool_size=0):
                pass


@pytest.mark.parametrize(
    ("endpoint_url", "verify"),
    [
        ("http://127.0.0.1:5000", False),
        ("HTTP://localstack:4566", False),
        ("https://localstack:4566", None),
        (None, None),
    ],
)
def test_tls_verified_unless_the_endpoint_is_plain_http(
    endpoint_url: str | None, verify: bool | None
) -> None:
    """Only a plain-HTTP endpoint skips the CA bundle; https and AWS keep botocore's choice."""
    assert tls_verify(endpoint_url) is verify
