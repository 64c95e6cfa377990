"""Nothing unsafe is ever loaded: the package never unpickles or evaluates user data."""

import pathlib
import re

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "learned_optim"
UNSAFE = re.compile(r"torch\.load\(|pickle\.loads?\(|^\s*import pickle|\beval\(|\bexec\(",
                    re.MULTILINE)


def test_no_unpickling_or_eval_in_the_package():
    hits = [f"{path.relative_to(PACKAGE)}: {match.group(0)}"
            for path in PACKAGE.rglob("*.py")
            for match in UNSAFE.finditer(path.read_text())]
    assert not hits, hits
