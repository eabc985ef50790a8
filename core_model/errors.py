"""User-facing errors. Command lines catch :class:`UserError` and print its message (no traceback)."""


class UserError(Exception):
    """Something the user can fix: a bad path, a wrong config value, a broken input file."""


class ConfigError(UserError):
    """A configuration value or file is missing or invalid."""


class ModelNotFoundError(UserError):
    """Encoder weights are not available offline."""


class DataError(UserError):
    """A dataset is unusable as given (missing columns, nothing usable left, ...)."""
