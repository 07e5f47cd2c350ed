"""The benchmark's child target, in a module of its own: a spawned child imports the target's
module, so it must not import anything the measurement should not include."""


def noop():
    pass
