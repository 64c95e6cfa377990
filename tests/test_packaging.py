"""Packaging: every subpackage and the bundled weights are declared for the wheel."""

import configparser
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_setup_cfg_lists_every_subpackage():
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    declared = set(config["options"]["packages"].split())
    on_disk = {".".join(init.parent.relative_to(ROOT).parts)
               for init in (ROOT / "learned_optim").rglob("__init__.py")}
    assert on_disk <= declared, sorted(on_disk - declared)
    assert "learned_optim.pretrained" in declared
    assert "learned_optim.pretrained = pretrained" in config["options"]["package_dir"]


def test_pyproject_is_build_system_only():
    text = (ROOT / "pyproject.toml").read_text()
    assert "[build-system]" in text and "[project]" not in text
