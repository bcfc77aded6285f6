"""How many zone streams send a snapshot at once: turns from kds.protocol.admission, awaited.

A zone stream that must send a snapshot asks ``SnapshotTurns`` for a ticket and waits until
it is granted, heartbeating meanwhile (globalcp.sending), then sends; it gives the ticket
back once the zone acknowledged the snapshot's last part, or when the stream ends, whichever
comes first. Every stream sending a snapshot holds its batches being written and grpc's
buffers for them, so this bounds global's memory in a snapshot storm (a fleet of new zones
at once) by design, whatever the fleet's size; the snapshot plan itself is shared.
"""

from __future__ import annotations

import asyncio

from kds.protocol.admission import Turns

__all__ = ["SnapshotTurns", "Ticket"]


class Ticket:
    """One stream's place: granted now, or waiting in line. Hashed by identity."""

    __slots__ = ("_granted", "_turns")

    def __init__(self, turns: SnapshotTurns):
        self._turns = turns
        self._granted = asyncio.Event()

    @property
    def granted(self) -> bool:
        return self._granted.is_set()

    async def wait(self) -> None:
        """Until the ticket is granted (wrap in a timeout to do something meanwhile)."""
        await self._granted.wait()

    def leave(self) -> None:
        """Give the turn back, or leave the line; the next in line is granted it. Idempotent."""
        self._turns._leave(self)


class SnapshotTurns:
    """At most ``limit`` streams sending a snapshot at once, the others served in order."""

    def __init__(self, limit: int):
        self._turns: Turns[Ticket] = Turns(limit)

    @property
    def limit(self) -> int:
        return self._turns.limit

    @property
    def sending(self) -> int:
        """Streams holding a turn: sending a snapshot, or waiting for its last ack."""
        return self._turns.holding

    @property
    def waiting(self) -> int:
        """Streams waiting for a turn to send the snapshot their zone needs."""
        return self._turns.waiting

    def ask(self) -> Ticket:
        ticket = Ticket(self)
        if self._turns.ask(ticket):
            ticket._granted.set()
        return ticket

    def set_limit(self, limit: int) -> None:
        """A reloaded setting: a larger one grants waiting streams at once."""
        for ticket in self._turns.set_limit(limit):
            ticket._granted.set()

    def _leave(self, ticket: Ticket) -> None:
        for granted in self._turns.leave(ticket):
            granted._granted.set()
