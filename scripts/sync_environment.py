"""Write environment.yml from pyproject.toml so conda users get the same packages.

    python scripts/sync_environment.py

tests/test_packaging.py fails when the two disagree.
"""
import pathlib
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def main():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra, items in project["optional-dependencies"].items():
        if extra == "gpu":
            continue
        for r in items:
            if not r.startswith("minilooped") and r not in reqs:
                reqs.append(r)
    lines = [
        "# conda env create -f environment.yml && conda activate minilooped",
        "# Generated from pyproject.toml by scripts/sync_environment.py: edit pyproject.toml, then rerun it.",
        "# CPU only (torch pinned to the CPU build 2.13.0). For GPUs see book/setup.md.",
        "name: minilooped",
        "channels:",
        "  - conda-forge",
        "dependencies:",
        f"  - python=3.11",
        "  - pip",
        "  - pip:",
    ]
    lines += [f'      - "{r}"' for r in reqs]
    lines += ['      - "-e ."']
    (ROOT / "environment.yml").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
