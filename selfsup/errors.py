"""The one exception type for mistakes a user can make (a path, a config value, a dataset), and the option
checks that raise it.

Its message names the problem and the fix; `train.py` prints it as one line instead of a traceback. Every
class checks its own numeric options in its constructor (`check_options`), so a bad value stops the run
when the configuration is instantiated, before any data is read or any GPU time is spent.
"""

from collections.abc import Iterable


class ConfigurationError(ValueError):
    """A user's mistake, with a message that names the fix.

    Raised in a DataLoader worker, it reaches the main process re-created by PyTorch with the worker's whole
    traceback as its message ("Caught ImageFolderError in DataLoader worker process 0. Original Traceback
    ..."); the constructor keeps only the original message, so the user still reads one line.
    """

    def __init__(self, message: str) -> None:
        name = type(self).__name__
        if message.startswith(f"Caught {name} in ") and "Original Traceback" in message:
            message = message.rpartition(f"{name}: ")[2].strip()
        super().__init__(message)


def positive(**options: float) -> list[str]:
    """Problems with options that must be greater than 0 (NaN is not)."""
    return [f"{name} must be greater than 0, got {value}" for name, value in options.items() if not value > 0]


def at_least(minimum: float, **options: float) -> list[str]:
    """Problems with options that must be at least `minimum`."""
    return [
        f"{name} must be at least {minimum}, got {value}" for name, value in options.items() if not value >= minimum
    ]


def below(maximum: float, **options: float) -> list[str]:
    """Problems with options that must be smaller than `maximum`."""
    return [f"{name} must be below {maximum}, got {value}" for name, value in options.items() if not value < maximum]


def within(low: float, high: float, **options: float) -> list[str]:
    """Problems with options that must lie in the closed interval [low, high]."""
    return [
        f"{name} must lie in [{low}, {high}], got {value}"
        for name, value in options.items()
        if not low <= value <= high
    ]


def check_options(problems: Iterable[str], flag_prefix: str) -> None:
    """Raise one `ConfigurationError` naming every problem, each with its command-line flag, e.g.
    `check_options(positive(temperature=t), "--model.init_args")`."""
    problems = [f"{flag_prefix}.{problem}" for problem in problems]
    if problems:
        raise ConfigurationError("; ".join(problems) + ". Fix these options in your config or on the command line.")
