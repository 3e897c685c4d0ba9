"""The one exception type for mistakes a user can fix (bad config, missing data, a model that does not fit)."""


class UserError(Exception):
    """A problem in the user's input, reported as one line that says what to fix; exits with status 2."""


class FolderTaken(UserError):
    """The run folder belongs to another configuration's run: refused without writing anything into it."""

    kind = "folder_taken"


class DataAbsent(UserError):
    """The dataset's files are not there and downloading is off. A size=debug sweep skips such a run with this
    line (skip_absent_data=true: smoke-test the arms whose data you have); every other run refuses."""

    kind = "data_absent"


class Diverged(UserError):
    """Training produced a non-finite loss or metric: the run stops with one line (error.json kind `diverged`)."""

    kind = "diverged"
