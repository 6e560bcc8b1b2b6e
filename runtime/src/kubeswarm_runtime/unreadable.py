"""Stored records a listing cannot read back: skipped, counted and logged once, so one bad record never breaks a listing."""

from __future__ import annotations

import logging
from typing import TypeVar

from prometheus_client import Counter
from pydantic import BaseModel, ValidationError

log = logging.getLogger(__name__)

Record = TypeVar("Record", bound=BaseModel)
# Keys already logged are remembered up to this many (then forgotten all at once): logging stays bounded too.
LOGGED_KEYS_KEPT = 1024


class UnreadableRecords:
    """Reads records of one ``kind`` (task, discovery, agent) for listings; counts what it skips."""

    def __init__(self, kind: str, counter: Counter) -> None:
        self.kind = kind
        self._skipped = counter.labels(kind)
        self._logged: set[str] = set()

    def parse(self, model: type[Record], key: str, data: bytes) -> Record | None:
        try:
            return model.model_validate_json(data)
        except ValidationError as exc:
            self._skipped.inc()
            if key not in self._logged:
                if len(self._logged) >= LOGGED_KEYS_KEPT:
                    self._logged.clear()
                self._logged.add(key)
                log.warning("skipping the unreadable %s record %s in listings: %s", self.kind, key, exc.errors()[0]["msg"])
            return None
