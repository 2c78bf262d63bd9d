"""The affected-user report (placeholder, see issue 5)."""


def report(out, progress=None) -> dict:
    raise NotImplementedError
