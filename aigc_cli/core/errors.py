"""Errors the CLI turns into a one-line message and exit code 1 (no traceback unless --debug)."""


class AigcError(Exception):
    """A problem the user can fix; the message is shown as one line."""


class DatasetError(AigcError):
    pass


class RunError(AigcError):
    pass


class ConfigError(AigcError):
    pass


class WeightsError(AigcError):
    pass


class TrainingDiverged(AigcError):
    pass


class Interrupted(AigcError):
    """Raised by long jobs after they saved a resumable state; carries the exit code (130/143)."""

    def __init__(self, message: str, exit_code: int = 130):
        super().__init__(message)
        self.exit_code = exit_code
