"""The twin rule as a test: the NumPy core's model files and their PyTorch mirrors differ
only where the frameworks differ.

The course promises that ``minilooped/models/X.py`` and ``minilooped/torch/models/X.py``
read line by line alike, so a reader can hold them side by side, and a fix to one twin
must be made to the other. The heuristic, stated:

1. Import lines at the top level and the one docstring line naming the twin are dropped.
2. Framework names are made equal: ``ml.``, ``torch.``, ``xp.`` (the core's NumPy/CuPy
   module) all become ``FW.``; ``.detach().clone()`` (torch) becomes ``.copy()`` (NumPy), and
   ``torch.from_numpy(a)`` becomes ``ml.Tensor(a)`` (a tensor from a host array).
3. A region between the comment lines ``# twin: framework-specific`` and ``# twin: end``
   is left out of both twins: helpers whose whole point is the framework (the core's
   finite-difference J v beside torch's forward-mode AD, array conversions, RNG state).
4. What is left must be equal line for line, except the differences listed in ALLOWED,
   each with the reason the frameworks force it.

A change to one twin alone (a new line, a changed expression, a renamed variable) fails.
"""
import difflib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "minilooped"
CORE, MIRROR = ROOT / "models", ROOT / "torch" / "models"
TWINS = sorted(p.name for p in MIRROR.glob("*.py") if p.name != "__init__.py" and (CORE / p.name).exists())

# (file, core line, mirror line) after normalisation, with why the frameworks need it.
# An entry's side may be None: a line that only one twin has.
ALLOWED = {
    "generate.py": [
        # the core takes host NumPy ids; torch keeps them as a tensor on the model's device
        ("idx = np.asarray(idx.numpy() if isinstance(idx, FW.Tensor) else idx, dtype=np.int64)", None),
        ("idx_next = sample(logits, temperature, top_k, rng)  # (B, 1)",
         "idx_next = FW.Tensor(sample(logits, temperature, top_k, rng)).to(idx.device)  # (B, 1)"),
        ("idx = np.concatenate((idx, idx_next), axis=1)  # (B, T + 1)",
         "idx = FW.cat((idx, idx_next), dim=1)  # (B, T + 1)"),
        # docstring: the core's ids are host arrays
        ("Token ids are NumPy int64 arrays (B, T) on the host, as the core takes them.", None),
    ],
    "parcae.py": [
        # the orthogonal init: torch writes a parameter in place under no_grad; the core sets
        # .data from a host NumPy QR (the core's init runs before the model moves to a GPU)
        (None, "with FW.no_grad():"),
        ("q, r = np.linalg.qr(w.numpy())", "q, r = FW.linalg.qr(w)"),
        ("w.data = (q * np.sign(np.diag(r)) * gain).astype(w.dtype)  # column j times sign(R_jj)",
         "w.copy_(q * FW.sign(FW.diag(r)) * gain)  # column j times sign(R_jj)"),
        # a host array as a framework tensor of the state's dtype and device
        ("return FW.Tensor(h, dtype=e.dtype).to(e.device)", "return FW.as_tensor(h, dtype=e.dtype, device=e.device)"),
        # a host boolean mask as a framework tensor on the state's device
        ("return FW.where(FW.Tensor(moving[:, None, None]).to(h.device), new, h)  # (B, T, C)",
         "return FW.where(FW.as_tensor(moving[:, None, None], device=h.device), new, h)  # (B, T, C)"),
    ],
    "recursive.py": [
        # the core chooses NumPy or CuPy by the weights' array; torch has one module
        ("xp = backend.array_module(residual)  # numpy, or cupy on a GPU", None),
    ],
}

_TWIN_LINE = re.compile(r"^(NumPy core; the PyTorch mirror|PyTorch mirror of the NumPy core's) ")
_IMPORT = re.compile(r"^(import |from \S+ import )")


def normalise(text: str) -> list[str]:
    out, skipping = [], False
    for line in text.splitlines():
        if line.strip() == "# twin: framework-specific":
            skipping = True
        if skipping:
            skipping = line.strip() != "# twin: end"
            continue
        if _IMPORT.match(line) or _TWIN_LINE.match(line):
            continue
        line = line.replace(".detach().clone()", ".copy()")
        line = re.sub(r"\b(ml|torch|xp)\.", "FW.", line).replace("FW.from_numpy(", "FW.Tensor(")
        out.append(line.strip())
    return [line for line in out if line]


def differences(name: str) -> list[tuple]:
    """(core line or None, mirror line or None) for every line the twins do not share."""
    a = normalise((CORE / name).read_text(encoding="utf-8"))
    b = normalise((MIRROR / name).read_text(encoding="utf-8"))
    diffs = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if op == "equal":
            continue
        left, right = a[i1:i2], b[j1:j2]
        for k in range(max(len(left), len(right))):
            diffs.append((left[k] if k < len(left) else None, right[k] if k < len(right) else None))
    return diffs


def test_every_mirror_file_has_a_core_twin():
    orphans = [p.name for p in MIRROR.glob("*.py") if p.name != "__init__.py" and not (CORE / p.name).exists()]
    assert not orphans, f"mirror files without a core twin: {orphans}"
    assert len(TWINS) >= 10


@pytest.mark.parametrize("name", TWINS)
def test_twins_differ_only_where_the_frameworks_do(name):
    allowed = set(ALLOWED.get(name, []))
    unexpected = [d for d in differences(name) if d not in allowed]
    assert not unexpected, (
        f"minilooped/models/{name} and minilooped/torch/models/{name} no longer read alike "
        "(core line | mirror line):\n" + "\n".join(f"  {c!r}\n  {m!r}\n" for c, m in unexpected)
        + "Make the same change in both twins, or add the difference to ALLOWED with the reason.")


def test_the_heuristic_catches_a_change_to_one_twin():
    """A line changed in the mirror alone is caught (the test can fail)."""
    core = (CORE / "loop_residual.py").read_text(encoding="utf-8")
    changed = core.replace("h = blocks[i](h)", "h = blocks[i](h) * 1.0", 1)
    a, b = normalise(core), normalise(changed)
    assert a != b
    assert normalise(core.replace("ml.zeros(", "torch.zeros(")) == normalise(core)
    marked = "# twin: framework-specific\nx = 1\n# twin: end\n"
    assert normalise(marked + core) == normalise(core)
