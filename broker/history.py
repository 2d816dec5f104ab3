"""When each MFA session started and ended, so "not logged in" can say since when
("MFA session ended at 17:02, after 12 h"). Times only: nothing secret is kept here,
and like the sessions themselves it lives in memory only."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from .plans import MfaSessionKey


@dataclass(frozen=True)
class Span:
    started_at: float
    ends_at: float
    logged_out_at: float | None = None

    def ended_at(self) -> float:
        return self.logged_out_at if self.logged_out_at is not None else self.ends_at


class SessionHistory:
    def __init__(self) -> None:
        self._spans: dict[MfaSessionKey, Span] = {}

    def started(self, key: MfaSessionKey, at: float, ends_at: float) -> None:
        self._spans[key] = Span(at, ends_at)

    def logged_out(self, key: MfaSessionKey, at: float) -> None:
        span = self._spans.get(key)
        if span is not None and span.logged_out_at is None and at < span.ends_at:
            self._spans[key] = Span(span.started_at, span.ends_at, at)

    def logged_out_all(self, at: float) -> None:
        for key in list(self._spans):
            self.logged_out(key, at)

    def current(self, key: MfaSessionKey) -> Span | None:
        """The last session of `key`, live or not."""
        return self._spans.get(key)

    def ended(self, key: MfaSessionKey, now: float) -> Span | None:
        """The last session of `key`, if it has ended by `now` (None: never had one, or live)."""
        span = self._spans.get(key)
        if span is None or now < span.ended_at():
            return None
        return span


def describe_end(span: Span, now: float) -> str:
    """"MFA session ended at 17:02, after 12 h" (or "... logged out at 17:02")."""
    when = clock_time(span.ended_at(), now)
    lasted = span_length(span.ended_at() - span.started_at)
    if span.logged_out_at is not None:
        return f"MFA session logged out at {when}, after {lasted}"
    return f"MFA session ended at {when}, after {lasted}"


def clock_time(epoch: float, now: float) -> str:
    """Local wall-clock time; with the date once it is not today's."""
    moment = dt.datetime.fromtimestamp(epoch)
    if moment.date() == dt.datetime.fromtimestamp(now).date():
        return moment.strftime("%H:%M")
    return moment.strftime("%Y-%m-%d %H:%M")


def span_length(seconds: float) -> str:
    minutes = max(0, round(seconds / 60))
    hours, minutes = divmod(minutes, 60)
    if not hours:
        return f"{minutes} min"
    return f"{hours} h" if not minutes else f"{hours} h {minutes} min"
