"""The sans-IO core: ZIP reading, messages, backoff policy, job accounting.

Pure functions and small state machines over frozen values. Nothing here
does I/O or imports trio, anyio, httpx, botocore, aiobotocore, hypercorn or
quart (tests/test_layout.py enforces it), so it is tested without a network
or an event loop. It may import only the standard library, attrs, cattrs,
isal and pipeline._errors.
"""

__all__: list[str] = []
