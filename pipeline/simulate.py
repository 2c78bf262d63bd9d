"""Incident simulator (placeholder, see issue 3)."""


def simulate(out, **options) -> dict:
    raise NotImplementedError
