from collections.abc import Iterator

import pytest

from tests.integration.harness import Cluster


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    with Cluster.in_temporary_directory() as group:
        yield group
