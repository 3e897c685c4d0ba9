"""The one exception type for mistakes a user can fix (bad config, missing data, a model that does not fit)."""


class UserError(Exception):
    """A problem in the user's input, reported as one line that says what to fix; exits with status 2."""
