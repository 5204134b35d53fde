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
