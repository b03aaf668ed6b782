import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.harness import Cluster


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    # A short directory: unix socket paths must stay under 108 bytes.
    root = Path(tempfile.mkdtemp(prefix="bzzz-"))
    group = Cluster(root)
    try:
        yield group
    finally:
        group.close()
        shutil.rmtree(root, ignore_errors=True)
