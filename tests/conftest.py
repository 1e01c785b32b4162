"""Shared pytest configuration: fixtures live in tests/fixtures/, one file per concern."""

pytest_plugins = [
    "tests.fixtures.videos",
    "tests.fixtures.http_server",
]
