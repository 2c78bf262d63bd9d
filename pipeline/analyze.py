"""Exposure analysis (placeholder, see issue 4)."""


def analyze(out, config=None, window=None, progress=None) -> dict:
    raise NotImplementedError
