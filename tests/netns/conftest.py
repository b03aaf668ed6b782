from collections.abc import Iterator

import pytest

from tests.integration.harness import Cluster
from tests.netns.lab import Lab, unavailable

_why = unavailable()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if _why is None:
        return
    for item in items:
        if "tests/netns/" in str(item.fspath):
            item.add_marker(pytest.mark.skip(reason=_why))


@pytest.fixture
def lab() -> Iterator[Lab]:
    with Lab() as made:
        yield made


@pytest.fixture
def cluster(lab: Lab) -> Iterator[Cluster]:
    # Depends on `lab`, so daemons are stopped before their namespaces are removed.
    with Cluster.in_temporary_directory() as group:
        yield group
