"""The package list in pyproject.toml names every package: an editable install finds a package that the list
forgot, so only a wheel (`pip install .`) would be missing it."""

from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_folder_is_listed_in_pyproject():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "facebatch").rglob("__init__.py")
        if "__pycache__" not in init.parts
    }
    assert found - listed == set(), "packages a wheel would leave out"
    for package, folder in config["package-dir"].items():
        assert (ROOT / folder).is_dir() and package in listed
