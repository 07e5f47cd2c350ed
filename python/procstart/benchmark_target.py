"""The benchmark's child target, in a module of its own: a spawned child imports the target's
module, so it must not import anything the measurement should not include."""


def noop():
    pass


def take(arg):
    """The target of the argument rows: the child has unpickled `arg` to call it."""
