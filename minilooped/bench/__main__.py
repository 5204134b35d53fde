"""`python -m minilooped.bench ops|train|profile|kernels|generate`: the project's speed and memory benchmarks."""
import sys


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("ops", "train", "profile", "kernels", "generate"):
        raise SystemExit("usage: python -m minilooped.bench ops|train|profile|kernels|generate [options]  (add -h for the options)")
    which, rest = argv[0], argv[1:]
    if which == "ops":
        from .ops import main as run
    elif which == "train":
        from .train import main as run
    elif which == "generate":
        from .generate import main as run
    elif which == "profile":
        from .profile import main as run
    else:
        from .kernels import main as run
    run(rest)


if __name__ == "__main__":
    main()
