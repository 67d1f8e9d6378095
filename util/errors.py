"""Errors that reach the user as a message, not a traceback.

train.py / test.py catch :class:`UserInputError` at the top level, print its message and exit
with status 2. Raise it for anything the user can fix (a missing folder, an unreadable image, a
mask whose size differs from its image, a corrupt checkpoint); the message names the file and
says what to do.
"""


class UserInputError(Exception):
    """A problem with the user's data, options or files, with a message that says how to fix it."""
