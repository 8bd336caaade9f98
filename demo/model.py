"""The simulated call floor's rules: chance curves, outcomes and cadences.

Pure code, no I/O. An outcome depends only on the seed, the lead's number in
the CRM's sequence and the attempt number, never on which agent happens to
take the call or when: the same seed gives every lead the same fate however
the agents' loops interleave.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass

#: Few conversions before the third call, most between the fifth and eighth:
#: the shape the "seventh call" research describes (DESIGN.md).
DEFAULT_CONVERT = (0.01, 0.01, 0.02, 0.05, 0.09, 0.10, 0.10, 0.08)
#: Reaching someone is likelier early (speed to lead); converting them is not.
DEFAULT_CONTACT = (0.30, 0.26, 0.24, 0.22, 0.22, 0.22, 0.20, 0.18)
#: Demo cadence: two weeks of follow-ups (DESIGN.md's `0m 10m 1h 4h 1d 2d 4d
#: 7d`) squeezed into a minute and a half.
DEFAULT_CADENCE = "0s 2s 4s 8s 12s 16s 20s 25s"

#: How a call that reaches nobody ends, and how often (weights).
NO_CONTACT = (("no_answer", 6), ("voicemail", 3), ("busy", 1))

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(s|m|h)?$")
_UNIT_SECONDS = {"s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


class ModelError(ValueError):
    """An option cannot be used; the message names it and says why."""


@dataclass(frozen=True)
class ChanceCurve:
    """A chance per attempt number; past its end the last value repeats."""

    chances: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.chances:
            raise ModelError("a chance curve needs at least one value")
        for attempt, chance in enumerate(self.chances, start=1):
            if not (math.isfinite(chance) and 0.0 <= chance <= 1.0):
                raise ModelError(
                    f"attempt {attempt}: {chance!r} is not a chance between 0 and 1"
                )

    def at(self, attempt: int) -> float:
        """The chance on attempt ``attempt`` (1-based)."""
        if attempt < 1:
            raise ValueError("attempts are numbered from 1")
        return self.chances[min(attempt, len(self.chances)) - 1]

    def described(self) -> str:
        return ",".join(f"{chance:g}" for chance in self.chances)


def parse_curve(text: str, option: str) -> ChanceCurve:
    """``"0.01,0.02,0.05"`` → a curve; errors name ``option`` and the value."""
    parts = [part.strip() for part in text.split(",")]
    if parts == [""]:
        raise ModelError(f"{option}: give chances separated by commas, e.g. 0.1,0.2")
    chances: list[float] = []
    for attempt, part in enumerate(parts, start=1):
        try:
            chances.append(float(part))
        except ValueError:
            raise ModelError(
                f"{option}: value {attempt} ({part!r}) is not a number"
            ) from None
    try:
        return ChanceCurve(tuple(chances))
    except ModelError as error:
        raise ModelError(f"{option}: {error}") from None


def parse_cadence(text: str, option: str = "--cadence") -> tuple[float, ...]:
    """``"0s 5s 1m"`` → gaps in seconds, as the queue reads a cadence."""
    gaps: list[float] = []
    for index, part in enumerate(text.split(), start=1):
        match = _DURATION.match(part)
        if match is None:
            raise ModelError(
                f"{option}: gap {index} ({part!r}) is not a duration such as 0s, 5s, 2m"
            )
        gaps.append(float(match.group(1)) * _UNIT_SECONDS[match.group(2)])
    if not gaps:
        raise ModelError(f"{option}: give at least one gap, e.g. '0s 5s 10s'")
    return tuple(gaps)


def cadence_span(gaps: tuple[float, ...], call_target: int) -> float:
    """Seconds from arrival to the last planned attempt (the cadence's last
    gap repeats when it is shorter than the target, as in the queue)."""
    return sum(gaps[min(n, len(gaps) - 1)] for n in range(call_target))


@dataclass(frozen=True)
class Outcome:
    disposition: str
    talk_seconds: float

    @property
    def contacted(self) -> bool:
        return self.disposition in ("contacted", "converted")

    @property
    def converted(self) -> bool:
        return self.disposition == "converted"


@dataclass(frozen=True)
class CallModel:
    """What happens on each call: reach the lead (``contact``), and among the
    calls that do, convert (``convert``, an unconditional chance per call, so
    it can never exceed the contact chance of the same attempt)."""

    contact: ChanceCurve
    convert: ChanceCurve
    seed: int
    call_seconds: tuple[float, float] = (0.1, 0.4)

    def __post_init__(self) -> None:
        longest = max(len(self.contact.chances), len(self.convert.chances))
        for attempt in range(1, longest + 1):
            if self.convert.at(attempt) > self.contact.at(attempt):
                raise ModelError(
                    f"attempt {attempt}: the conversion chance "
                    f"{self.convert.at(attempt):g} is above the contact chance "
                    f"{self.contact.at(attempt):g} (a conversion is a contact)"
                )
        low, high = self.call_seconds
        if not (math.isfinite(low) and math.isfinite(high) and 0 <= low <= high):
            raise ModelError(
                f"--call-seconds: {low:g}-{high:g} is not a range of seconds"
            )

    def outcome(self, lead_number: int, attempt: int) -> Outcome:
        """Lead ``lead_number``'s call ``attempt``: the same every run with
        this seed."""
        draw = random.Random(f"redial-demo/{self.seed}/{lead_number}/{attempt}")
        chance = draw.random()
        low, high = self.call_seconds
        talk = round(draw.uniform(low, high), 3)
        if chance < self.convert.at(attempt):
            return Outcome("converted", talk)
        if chance < self.contact.at(attempt):
            return Outcome("contacted", talk)
        names = [name for name, _ in NO_CONTACT]
        weights = [weight for _, weight in NO_CONTACT]
        # Nobody answered: the call is over sooner than a conversation.
        return Outcome(draw.choices(names, weights)[0], round(talk / 2, 3))

    def conversion_shares(self, call_target: int) -> list[float]:
        """Expected share of all conversions that happen on each attempt."""
        chances = self.conversion_chances(call_target)
        total = sum(chances)
        return [chance / total if total else 0.0 for chance in chances]

    def conversion_chances(self, call_target: int) -> list[float]:
        """Chance that a lead converts on attempt n (n = 1…target): it must
        not have converted on any earlier call."""
        still_open, chances = 1.0, []
        for attempt in range(1, call_target + 1):
            chance = self.convert.at(attempt)
            chances.append(still_open * chance)
            still_open *= 1 - chance
        return chances


def parse_range(text: str, option: str) -> tuple[float, float]:
    """``"0.1-0.4"`` → (0.1, 0.4); a single number is a fixed value."""
    low_text, separator, high_text = text.partition("-")
    try:
        low = float(low_text)
        high = float(high_text) if separator else low
    except ValueError:
        raise ModelError(
            f"{option}: {text!r} is not MIN-MAX in seconds, e.g. 0.1-0.4"
        ) from None
    if not (math.isfinite(low) and math.isfinite(high) and 0 <= low <= high):
        raise ModelError(f"{option}: {text!r} is not a range with 0 <= MIN <= MAX")
    return low, high
