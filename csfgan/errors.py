"""The one base class for errors a user can fix (bad input, missing files, wrong config).

The CLI prints these as one clear line and exits with status 2; anything else is a bug and keeps
its traceback.
"""


class UserError(Exception):
    """Bad input whose message names the file, key or value and says what to do."""


USER_ERRORS = (UserError,)
