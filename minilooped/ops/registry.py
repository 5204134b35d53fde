"""A name -> function table of the differentiable ops (used by the coverage test)."""
OPS: dict = {}


def register(name: str):
    def wrap(fn):
        if name in OPS:
            raise RuntimeError(f"op {name!r} registered twice")
        OPS[name] = fn
        return fn
    return wrap
