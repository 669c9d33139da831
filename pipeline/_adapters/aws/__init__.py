"""AWS over aiobotocore on its httpx backend: clients, SQS, the S3 sink, metadata, jobs."""

__all__: list[str] = []
