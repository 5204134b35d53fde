"""The library's layers only look down (DEVELOPERS.md): checked on the import statements.

backend <- tensor and ops <- nn and optim <- models <- training <- experiments and bench. Only backend.py may
import numpy or cupy among the core files; the core and its models never import torch
(the mirror lives in minilooped/torch/, parity lives in tests); data never imports
models; nothing in the library imports exercises/.
"""
import ast
import pathlib

import pytest

PKG = pathlib.Path(__file__).resolve().parents[1] / "minilooped"

CORE = ["tensor.py", "grad_buffers.py", "_methods.py", "creation.py", "functional.py", "io.py", "atomic.py", "testing.py", "ops", "nn", "optim"]


def _files(*names):
    for name in names:
        p = PKG / name
        if p.is_dir():
            yield from sorted(p.rglob("*.py"))
        elif p.exists():
            yield p


def _imports(path):
    """Every module name imported anywhere in the file (function bodies included)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the file's package
                parts = list(path.relative_to(PKG.parent).with_suffix("").parts)[:-node.level]
                yield ".".join(parts + ([node.module] if node.module else [])), node.lineno
            else:
                yield node.module or "", node.lineno


def _violations(files, banned):
    bad = []
    for f in files:
        for mod, line in _imports(f):
            if any(mod == b or mod.startswith(b + ".") for b in banned):
                bad.append(f"{f.relative_to(PKG.parent)}:{line} imports {mod}")
    return bad


def test_only_backend_imports_numpy_or_cupy():
    assert not _violations(_files(*CORE), ["numpy", "cupy"]), \
        "core files must take their array module from minilooped.backend"


def test_core_and_models_never_import_torch():
    files = list(_files(*CORE, "backend.py", "models"))
    assert files
    assert not _violations(files, ["torch", "minilooped.torch"])


def test_core_does_not_import_upper_layers():
    upper = ["minilooped.models", "minilooped.data", "minilooped.training", "minilooped.bench",
             "minilooped.torch", "minilooped.grade"]
    assert not _violations(_files(*CORE, "backend.py"), upper)


def test_data_never_imports_models_or_engines():
    files = list(_files("data"))
    if not files:
        pytest.skip("no data package yet")
    assert not _violations(files, ["minilooped.models", "minilooped.torch", "torch", "minilooped.training"])


def test_library_never_imports_exercises():
    assert not _violations(_files("."), ["exercises"])


def test_models_never_import_training_or_what_stands_on_it():
    files = list(_files("models")) + list(_files("torch/models"))
    assert not _violations(files, ["minilooped.training", "minilooped.experiments", "minilooped.bench"])


def test_training_never_imports_studies_or_benchmarks():
    """experiments/ and bench/ stand on training/; provenance.py is shared from below."""
    assert not _violations(_files("training"), ["minilooped.experiments", "minilooped.bench"])
