"""pyproject.toml and environment.yml must ask for the same packages."""
import pathlib
import re
import tomllib

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[ ;]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _pyproject_requirements():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(data["dependencies"])
    for extra, items in data["optional-dependencies"].items():
        if extra == "gpu":  # CuPy needs CUDA: not part of the conda CPU environment
            continue
        reqs += [r for r in items if not r.startswith("minilooped")]
    return {_name(r): r.replace(" ", "") for r in reqs}


def _conda_requirements():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = []
    for dep in env["dependencies"]:
        if isinstance(dep, dict) and "pip" in dep:
            pip = [p for p in dep["pip"] if not p.startswith("-e")]
    return {_name(r): r.replace(" ", "") for r in pip}


def test_environment_yml_lists_the_same_packages_as_pyproject():
    py, conda = _pyproject_requirements(), _conda_requirements()
    assert set(py) == set(conda), f"only in pyproject: {set(py) - set(conda)}; only in environment.yml: {set(conda) - set(py)}"
    assert py == conda, "version specifiers differ: " + str({k: (py[k], conda[k]) for k in py if py[k] != conda[k]})


def test_torch_is_pinned_for_cpu_installs():
    assert _pyproject_requirements()["torch"] == "torch==2.13.0"


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in readme and "make test" in ci


# Modules that a package of the book extra brings with it rather than a distribution of their own name.
_BROUGHT_BY = {"ipython": "ipykernel", "tiktoken-ext": "tiktoken"}


def _book_closure():
    """Distribution names `pip install minilooped[book]` asks for by name, self-references expanded."""
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras, names, todo = data["optional-dependencies"], {_name(r) for r in data["dependencies"]}, ["book"]
    while todo:
        for req in extras[todo.pop()]:
            if req.startswith("minilooped["):
                todo += req[len("minilooped["):req.index("]")].split(",")
            else:
                names.add(_name(req))
    return names


def _chapter_imports():
    """Top-level modules imported by the code cells of every chapter (the stdlib's left out)."""
    import json
    import sys
    found = {}
    for path in sorted((ROOT / "chapters").glob("*.ipynb")):
        for cell in json.loads(path.read_text())["cells"]:
            if cell["cell_type"] != "code":
                continue
            for line in "".join(cell["source"]).splitlines():
                m = re.match(r"\s*(?:from|import)\s+([A-Za-z_][\w]*)", line)
                if m and m.group(1) not in sys.stdlib_module_names and m.group(1) != "minilooped":
                    found.setdefault(m.group(1), path.name)
    return found


def test_the_book_extra_installs_everything_the_chapters_import():
    from importlib.metadata import packages_distributions
    dists, book = packages_distributions(), _book_closure()
    missing = {}
    for module, chapter in _chapter_imports().items():
        names = {_name(d) for d in dists.get(module, [module])}
        names = {_BROUGHT_BY.get(n, n) for n in names}
        if not names & book:
            missing[module] = chapter
    assert not missing, f"chapters import modules that `pip install minilooped[book]` does not bring: {missing}"
