"""One local Ray instance (2 logical CPUs) for the whole test session, shut down at its end."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from edgequant.executors.ray import RayExecutor


@pytest.fixture(scope="session")
def ray_executor() -> Iterator[RayExecutor]:
    import ray

    ex = RayExecutor(num_cpus=2, max_retries=3)
    yield ex
    if ray.is_initialized():
        ray.shutdown()
