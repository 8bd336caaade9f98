"""The project's clocks: the manual one tests move, the shared one the
end-to-end tests move across processes, and the real one."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from shared.clock import Clock, ManualClock, SharedClock, SystemClock
from shared.settings import ServiceSettings
from shared.wiring import clock_for

START = dt.datetime(2026, 1, 5, 15, 0, tzinfo=dt.UTC)


def test_manual_clock_stands_still_until_moved() -> None:
    clock = ManualClock(START)

    assert clock.now() == clock.now() == START
    assert clock.monotonic() == clock.monotonic()


def test_manual_clock_has_a_fixed_default_start_in_utc() -> None:
    clock = ManualClock()

    assert clock.now() == START
    assert clock.now().tzinfo is dt.UTC


def test_start_in_another_zone_is_kept_as_utc() -> None:
    miami = dt.datetime(2026, 1, 5, 10, 0, tzinfo=ZoneInfo("America/New_York"))

    clock = ManualClock(miami)

    assert clock.now() == START
    assert clock.now().tzinfo is dt.UTC


def test_naive_start_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        ManualClock(dt.datetime(2026, 1, 5, 15, 0))


def test_advance_by_timedelta_returns_the_new_time() -> None:
    clock = ManualClock(START)

    moved = clock.advance(dt.timedelta(days=30))

    assert moved == clock.now() == START + dt.timedelta(days=30)


def test_advance_by_seconds() -> None:
    clock = ManualClock(START)

    clock.advance(90.5)

    assert clock.now() == START + dt.timedelta(seconds=90.5)


def test_monotonic_advances_with_the_clock() -> None:
    """Timeouts computed from monotonic() must follow the moved time."""
    clock = ManualClock(START)
    before = clock.monotonic()

    clock.advance(dt.timedelta(minutes=2))
    clock.advance(30)

    assert clock.monotonic() - before == 150


def test_advance_by_zero_changes_nothing() -> None:
    clock = ManualClock(START)
    before = clock.monotonic()

    clock.advance(0)

    assert (clock.now(), clock.monotonic()) == (START, before)


@pytest.mark.parametrize("delta", [-1, dt.timedelta(microseconds=-1)])
def test_clock_refuses_to_move_backwards(delta: float | dt.timedelta) -> None:
    clock = ManualClock(START)
    before = clock.monotonic()

    with pytest.raises(ValueError, match="only moves forward"):
        clock.advance(delta)

    assert (clock.now(), clock.monotonic()) == (START, before)


def test_set_jumps_forward_and_moves_monotonic_with_it() -> None:
    clock = ManualClock(START)
    before = clock.monotonic()
    target = START + dt.timedelta(hours=3)

    clock.set(target)

    assert clock.now() == target
    assert clock.monotonic() - before == 3 * 3600


def test_set_accepts_a_time_in_another_zone() -> None:
    clock = ManualClock(START)

    clock.set(dt.datetime(2026, 1, 5, 12, 0, tzinfo=ZoneInfo("America/Los_Angeles")))

    assert clock.now() == START + dt.timedelta(hours=5)
    assert clock.now().tzinfo is dt.UTC


def test_set_to_the_current_time_is_allowed() -> None:
    clock = ManualClock(START)

    clock.set(START)

    assert clock.now() == START


def test_set_refuses_the_past() -> None:
    clock = ManualClock(START)

    with pytest.raises(ValueError, match="only moves forward"):
        clock.set(START - dt.timedelta(seconds=1))

    assert clock.now() == START


def test_set_refuses_a_naive_time() -> None:
    """Regression: a naive time was read as the machine's local time."""
    clock = ManualClock(START)

    with pytest.raises(ValueError, match="timezone-aware"):
        clock.set(dt.datetime(2030, 1, 1, 12, 0))


def test_system_clock_is_aware_utc_and_monotonic() -> None:
    clock: Clock = SystemClock()

    first = clock.monotonic()
    now = clock.now()

    assert now.tzinfo is dt.UTC
    assert clock.monotonic() >= first


def test_manual_clock_is_a_clock() -> None:
    clock: Clock = ManualClock(START)

    assert clock.now() == START


# -- the shared clock of the end-to-end tests --------------------------------


def test_shared_clock_moves_every_reader(tmp_path: Path) -> None:
    start = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
    writer = SharedClock.create(tmp_path / "clock", start)
    reader = SharedClock(tmp_path / "clock")
    assert reader.now() == start
    before = reader.monotonic()

    writer.advance(dt.timedelta(days=30, microseconds=5))

    assert reader.now() == start + dt.timedelta(days=30, microseconds=5)
    assert reader.monotonic() - before == pytest.approx(30 * 86_400, abs=1e-5)


def test_shared_clock_is_read_by_another_process(tmp_path: Path) -> None:
    writer = SharedClock.create(tmp_path / "clock")
    writer.set(dt.datetime(2027, 1, 1, 9, 30, tzinfo=dt.UTC))
    program = (
        "import sys; from pathlib import Path; from shared.clock import SharedClock;"
        "print(SharedClock(Path(sys.argv[1])).now().isoformat())"
    )
    printed = subprocess.run(
        [sys.executable, "-c", program, str(tmp_path / "clock")],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    assert printed == "2027-01-01T09:30:00+00:00"


def test_shared_clock_reader_cannot_move_time(tmp_path: Path) -> None:
    SharedClock.create(tmp_path / "clock")
    with pytest.raises(PermissionError):
        SharedClock(tmp_path / "clock").advance(1)


def test_shared_clock_refuses_going_back_and_foreign_files(tmp_path: Path) -> None:
    writer = SharedClock.create(tmp_path / "clock")
    with pytest.raises(ValueError, match="only moves forward"):
        writer.set(writer.now() - dt.timedelta(seconds=1))
    (tmp_path / "other").write_bytes(b"\0" * 24)
    with pytest.raises(ValueError, match="not a Redial test clock file"):
        SharedClock(tmp_path / "other")


def test_shared_clock_file_is_never_rewritten_under_its_readers(
    tmp_path: Path,
) -> None:
    """Regression: ``create`` on an existing file rewrote it in place, and the
    truncation that starts a rewrite killed a process reading the mapping at
    that moment with SIGBUS. Now the file is created once or refused."""
    writer = SharedClock.create(tmp_path / "clock")
    reader = SharedClock(tmp_path / "clock")

    with pytest.raises(FileExistsError):
        SharedClock.create(tmp_path / "clock", writer.now() + dt.timedelta(days=1))

    assert reader.now() == writer.now()
    assert (tmp_path / "clock").stat().st_size == 24


@pytest.mark.parametrize("environment", ["production", "development"])
def test_test_clock_file_is_refused_outside_tests(
    tmp_path: Path, environment: str
) -> None:
    with pytest.raises(ValidationError, match="REDIAL_TEST_CLOCK_FILE is set"):
        ServiceSettings(environment=environment, test_clock_file=tmp_path / "clock")


def test_services_read_the_shared_clock_only_when_told(tmp_path: Path) -> None:
    writer = SharedClock.create(tmp_path / "clock")
    told = ServiceSettings(environment="test", test_clock_file=tmp_path / "clock")
    clock = clock_for(told)
    assert isinstance(clock, SharedClock)
    assert clock.now() == writer.now()
    assert isinstance(clock_for(ServiceSettings(environment="test")), SystemClock)


def test_an_empty_test_clock_variable_means_no_test_clock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REDIAL_TEST_CLOCK_FILE", "")
    monkeypatch.setenv("REDIAL_ENVIRONMENT", "production")
    settings = ServiceSettings()
    assert settings.test_clock_file is None
    assert isinstance(clock_for(settings), SystemClock)


def test_the_test_clock_variable_is_refused_in_production(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("REDIAL_TEST_CLOCK_FILE", str(tmp_path / "clock"))
    monkeypatch.setenv("REDIAL_ENVIRONMENT", "production")
    with pytest.raises(ValidationError, match="accepted only with REDIAL_ENVIRONMENT"):
        ServiceSettings()


def test_a_production_service_with_the_test_clock_set_does_not_start(
    tmp_path: Path,
) -> None:
    """The real start command, with the variable left over in production:
    the process exits at once, naming the variable, before serving anything."""
    SharedClock.create(tmp_path / "clock")
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("REDIAL_", "QUEUE_"))
    }
    started = subprocess.run(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "services.queue.app:create_app",
            "--port",
            "0",
        ],
        env=environment
        | {
            "REDIAL_ENVIRONMENT": "production",
            "REDIAL_TEST_CLOCK_FILE": str(tmp_path / "clock"),
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert started.returncode != 0
    assert "REDIAL_TEST_CLOCK_FILE is set but REDIAL_ENVIRONMENT is" in started.stderr
