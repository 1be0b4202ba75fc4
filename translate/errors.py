"""Errors a user can cause. The CLI prints their message (one line) and exits non-zero."""
from __future__ import annotations


class TranslateError(Exception):
    """Base class: the message names the file or option at fault and says how to fix it."""

    exit_code = 1


class ConfigError(TranslateError):
    """A bad option, config file or combination of options."""

    exit_code = 2


class DataError(TranslateError):
    """Missing, empty or unreadable data."""


class DeviceError(TranslateError):
    """A device was asked for that this machine does not have."""


class CheckpointError(TranslateError):
    """A run directory or checkpoint that cannot be used as asked."""


class TrainingFailure(TranslateError):
    """The health monitor stopped the run (``--stop-on-failure``)."""

    exit_code = 3
