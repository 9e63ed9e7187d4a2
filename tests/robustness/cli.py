"""What every robustness case checks on the command line: one ``error:`` line, never a traceback
and never ``unexpected``."""

from __future__ import annotations

import re
from collections.abc import Sequence

from finetuner.cli import main


def assert_one_clear_error(capsys, argv: Sequence[str], *, names: str | None = None) -> str:
    """Run ``finetuner ARGV`` in this process; assert it fails with exactly one ``error:`` line
    on stderr that does not say ``unexpected`` (and, given *names*, matches that regular
    expression). Returns the line."""
    capsys.readouterr()
    code = main(list(argv))
    _out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert code != 0, f"finetuner {' '.join(argv)} succeeded; stderr: {err!r}"
    assert len(errors) == 1, f"expected one error line, got: {err!r}"
    assert "Traceback" not in err, err
    assert "unexpected" not in errors[0], errors[0]
    if names is not None:
        assert re.search(names, errors[0]), f"{errors[0]!r} does not match {names!r}"
    return errors[0]
