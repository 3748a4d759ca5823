"""The one exception type for mistakes a user can make (a path, a config value, a dataset), and the option
checks that raise it.

Its message names the problem and the fix; the `selfsup` command prints it as one line instead of a traceback. Every
class checks its own numeric options in its constructor (`check_options`), so a bad value stops the run
when the configuration is instantiated, before any data is read or any GPU time is spent.
"""

import math
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


def format_bytes(count: float) -> str:
    """A size for messages, in the largest unit that keeps it at least 1: '2.5 TiB', '12.3 GiB', '512.0 KiB'."""
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{int(count)} bytes"


def _problems(options: dict[str, float], holds, requirement: str) -> list[str]:
    """A problem for each option whose value does not satisfy `holds` (`requirement` says it in words) or is not a
    finite number: infinity (`1e400` in YAML) would train on NaN."""
    return [
        f"{name} must {requirement}, got {value}" if not holds(value) else f"{name} must be finite, got {value}"
        for name, value in options.items()
        if not (holds(value) and math.isfinite(value))
    ]


def positive(**options: float) -> list[str]:
    """Problems with options that must be finite and greater than 0 (NaN is not)."""
    return _problems(options, lambda value: value > 0, "be greater than 0")


def at_least(minimum: float, **options: float) -> list[str]:
    """Problems with options that must be finite and at least `minimum`."""
    return _problems(options, lambda value: value >= minimum, f"be at least {minimum}")


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


class OptionsError(ConfigurationError):
    """Options that fail their checks. From Python the message names the arguments ("base_lr must be greater than
    0, got 0"); the command line shows each with its flag instead (`with_flags`: "--model.init_args.base_lr must
    ..."), so neither reads the other's spelling."""

    def __init__(self, problems: list[str], flag_prefix: str) -> None:
        self.problems, self.flag_prefix = problems, flag_prefix
        argument_prefix = _argument_prefix(flag_prefix)
        named = [f"{argument_prefix}{problem}" for problem in problems]
        super().__init__("; ".join(named) + ". Fix these arguments.")

    def with_flags(self) -> str:
        """The message as the command line reports it, each option under its flag."""
        flagged = [f"{self.flag_prefix}.{problem}" for problem in self.problems]
        return "; ".join(flagged) + ". Fix these options in your config or on the command line."


def _argument_prefix(flag_prefix: str) -> str:
    """The Python spelling of a flag prefix: "--model.init_args" -> "", "--model.init_args.mixing" -> "mixing.",
    "--data" -> "" (the class's own arguments need no prefix; a nested option group keeps its name)."""
    path = flag_prefix.removeprefix("--")
    for group in ("model.init_args", "data"):
        if path == group or path.startswith(f"{group}."):
            path = path.removeprefix(group).removeprefix(".")
            break
    return f"{path}." if path else ""


def check_options(problems: Iterable[str], flag_prefix: str) -> None:
    """Raise one `OptionsError` naming every problem, e.g. `check_options(positive(temperature=t),
    "--model.init_args")`; `flag_prefix` is where the options sit on the command line."""
    problems = list(problems)
    if problems:
        raise OptionsError(problems, flag_prefix)
