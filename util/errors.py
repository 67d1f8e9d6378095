"""Errors that reach the user as a message, not a traceback.

train.py / test.py catch :class:`UserInputError` at the top level, print its message and exit
with status 2. Raise it for anything the user can fix (a missing folder, an unreadable image, a
mask whose size differs from its image, a corrupt checkpoint); the message names the file and
says what to do.
"""


class UserInputError(Exception):
    """A problem with the user's data, options or files, with a message that says how to fix it."""


def run_cli(main, argv=None, exit_codes=None):
    """Run a command-line ``main(argv)``; a :class:`UserInputError` becomes its message on stderr
    and exit status 2 (no traceback). ``exit_codes`` maps further exception types to their exit
    statuses the same way (e.g. ``{NonFiniteLoss: 3}``; the most specific class wins). Returns
    main's return value as the exit status."""
    import sys
    codes = {UserInputError: 2, **(exit_codes or {})}
    try:
        return main(argv)
    except tuple(codes) as e:
        print(f'error: {e}', file=sys.stderr)
        return next(codes[cls] for cls in type(e).__mro__ if cls in codes)
