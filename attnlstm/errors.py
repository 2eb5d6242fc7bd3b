"""Errors a user can fix by changing the config; the runner prints them without a traceback."""


class ConfigError(ValueError):
    """A config that composes but cannot run (e.g. a model that cannot solve the task)."""
