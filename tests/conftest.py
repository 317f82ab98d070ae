"""Fixtures shared by every tier."""

pytest_plugins = ["tests.fixtures_prometheus"]
