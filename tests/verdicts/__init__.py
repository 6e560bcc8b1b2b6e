"""Manifests and the verdict every door must give them: the cluster (CRD schema and CEL) and local mode alike.

Each ``*.yaml`` here starts with ``# verdict: accepted`` or ``# verdict: refused: <text>``, where
<text> is what the error must say.  tests/e2e/test_operator_validation.py applies them to the API
server; local mode's tests load them with its manifest loader: one set of cases, the same verdicts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).parent
_PREFIX = "# verdict: "


@dataclass(frozen=True)
class Case:
    path: Path
    refused_with: str | None  # None: accepted

    @property
    def id(self) -> str:
        return self.path.stem


def _case(path: Path) -> Case:
    first = path.read_text().splitlines()[0]
    if not first.startswith(_PREFIX):
        raise ValueError(f"{path}: the first line must be '{_PREFIX}accepted' or '{_PREFIX}refused: <text>'")
    verdict = first.removeprefix(_PREFIX)
    if verdict == "accepted":
        return Case(path, None)
    if verdict.startswith("refused: "):
        return Case(path, verdict.removeprefix("refused: "))
    raise ValueError(f"{path}: unknown verdict {verdict!r}")


CASES = [_case(path) for path in sorted(HERE.glob("*.yaml"))]
