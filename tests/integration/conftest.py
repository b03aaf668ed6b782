from tests.integration.github_world import fake  # noqa: F401 (a fixture)
