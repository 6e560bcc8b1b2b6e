"""The runtime's idempotent JetStream setup: find, else make; a refused make is a concurrent one, or the reason."""

from __future__ import annotations

import pytest
from kubeswarm_runtime.connection import found_or_made
from nats.js.errors import BadRequestError, NotFoundError

pytestmark = pytest.mark.unit

PLACEMENT = BadRequestError(code=400, err_code=10005, description="no suitable peers for placement, peer offline")


class Server:
    """What the JetStream API answers a find and a make with, in turn."""

    def __init__(self, *, found: list[object], made: object) -> None:
        self.found, self.made, self.makes = found, made, 0

    async def find(self) -> str:
        answer = self.found.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return str(answer)

    async def make(self) -> str:
        self.makes += 1
        if isinstance(self.made, Exception):
            raise self.made
        return str(self.made)


async def test_what_exists_is_used_and_nothing_made() -> None:
    server = Server(found=["there"], made="new")
    assert await found_or_made(server.find, server.make) == "there" and server.makes == 0


async def test_what_is_missing_is_made_and_its_answer_used() -> None:
    server = Server(found=[NotFoundError(code=404, err_code=10059)], made="new")
    assert await found_or_made(server.find, server.make) == "new" and server.found == []


async def test_a_refused_make_uses_what_another_made_meanwhile() -> None:
    server = Server(found=[NotFoundError(code=404, err_code=10059), "theirs"], made=PLACEMENT)
    assert await found_or_made(server.find, server.make) == "theirs"


async def test_a_refused_make_with_nothing_there_raises_the_refusal_not_not_found() -> None:
    server = Server(found=[NotFoundError(code=404, err_code=10059), NotFoundError(code=404, err_code=10059)], made=PLACEMENT)
    with pytest.raises(BadRequestError) as refused:
        await found_or_made(server.find, server.make)
    assert refused.value is PLACEMENT
