"""Operator commands shipped with the service (provisioning); they use the adapters."""

__all__: list[str] = []
