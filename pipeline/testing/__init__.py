"""Local runs and tests only: the Export API simulator, moto launcher, demo data, --local.

Never imported by the service (tests/test_layout.py enforces it): a worker
image needs none of it. It may import anything in the package.
"""

__all__: list[str] = []
