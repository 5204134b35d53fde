"""`python -m minilooped.bench ops|train|profile|kernels|generate|exit|gpu`: the project's speed and
memory benchmarks (gpu: the GPU path checked in one run, see gpu.py)."""
import importlib
import sys

BENCHES = ("ops", "train", "profile", "kernels", "generate", "exit", "gpu")  # one module each


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in BENCHES:
        raise SystemExit(f"usage: python -m minilooped.bench {'|'.join(BENCHES)} [options]  (add -h for the options)")
    which, rest = argv[0], argv[1:]
    from .. import backend

    backend.tune_allocator()  # as training does (backend.py: malloc keeps freed blocks for reuse)
    importlib.import_module(f".{which}", __package__).main(rest)


if __name__ == "__main__":
    main()
