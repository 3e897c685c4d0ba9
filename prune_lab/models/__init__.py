"""Models: every option of the `model` config group is a class here, built from the data's `DataInfo`."""
