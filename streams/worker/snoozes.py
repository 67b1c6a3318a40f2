"""The accounts operators snoozed (`health snooze`): no alert of theirs is published until the snooze ends.

Every worker keeps the latest snooze of every account from the control topic (read whole at start, then
followed), whichever partitions it owns: a rebalance moves accounts, not snoozes. Bounded: past
MAX_SNOOZES accounts a new one is refused (logged, counted); an ended or expired snooze frees its place.
"""
from __future__ import annotations

import logging

from streams.text import printable
from streams.worker.control import Snooze

log = logging.getLogger(__name__)

MAX_SNOOZES = 100_000


class Snoozes:
    def __init__(self, limit: int = MAX_SNOOZES):
        self.limit = limit
        self._by_account: dict[str, Snooze] = {}
        self.refused = 0

    def apply(self, snooze: Snooze, now: float) -> bool:
        """Take an operator's snooze (or its end: until None); False when refused for the bound."""
        accounts = self._by_account
        if snooze.until is None or snooze.until <= now:
            accounts.pop(snooze.account_id, None)
            return True
        if snooze.account_id not in accounts and len(accounts) >= self.limit:
            self.expire(now)
            if len(accounts) >= self.limit:
                self.refused += 1
                if self.refused & (self.refused - 1) == 0:  # the 1st, 2nd, 4th, 8th...: a flood logs little
                    log.error("snooze of %r refused: %d accounts are snoozed already (the limit); %d refused so far",
                              printable(snooze.account_id, 80), len(accounts), self.refused)
                return False
        accounts[snooze.account_id] = snooze
        return True

    def active(self, account_id: str, now: float) -> Snooze | None:
        """The account's snooze if it is in force at `now`."""
        snooze = self._by_account.get(account_id)
        return snooze if snooze is not None and snooze.until > now else None

    def expire(self, now: float) -> None:
        for account in [a for a, s in self._by_account.items() if s.until <= now]:
            del self._by_account[account]

    def __len__(self) -> int:
        return len(self._by_account)
