"""The one exception type for mistakes a user can make (a path, a config value, a dataset).

Its message names the problem and the fix; `train.py` prints it as one line instead of a traceback.
"""


class ConfigurationError(ValueError):
    pass
