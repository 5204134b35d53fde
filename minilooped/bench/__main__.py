"""`python -m minilooped.bench ops|train|profile|kernels|exit|gpu`: the project's speed and memory
benchmarks (gpu: the GPU path checked in one run, see gpu.py)."""
import sys


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("ops", "train", "profile", "kernels", "exit", "gpu"):
        raise SystemExit("usage: python -m minilooped.bench ops|train|profile|kernels|exit|gpu [options]  "
                         "(add -h for the options)")
    which, rest = argv[0], argv[1:]
    from .. import backend

    backend.tune_allocator()  # as training does (backend.py: malloc keeps freed blocks for reuse)
    if which == "ops":
        from .ops import main as run
    elif which == "train":
        from .train import main as run
    elif which == "profile":
        from .profile import main as run
    elif which == "exit":
        from .exit import main as run
    elif which == "gpu":
        from .gpu import main as run
    else:
        from .kernels import main as run
    run(rest)


if __name__ == "__main__":
    main()
