"""The debounce logic, driven by a scripted clock and scripted event sources."""

from __future__ import annotations

import random

import pytest

from worker.live.debounce import Change, Debouncer, Flush


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


Ev = tuple[float, str, Change]


def run_script(
    deb: Debouncer[str], clock: Clock, events: list[Ev], until: float
) -> list[tuple[float, Flush[str]]]:
    """Feed ``events`` (time offset, key, change) and poll ``due`` the way the watcher does:
    at every event and at every deadline the debouncer announces."""
    out: list[tuple[float, Flush[str]]] = []
    start = clock.now
    queue = sorted(events, key=lambda e: e[0])
    i = 0
    while True:
        deadline = deb.next_deadline()
        next_event = start + queue[i][0] if i < len(queue) else None
        candidates = [t for t in (deadline, next_event) if t is not None]
        if not candidates:
            break
        t = min(candidates)
        if t > start + until:
            break
        clock.now = max(clock.now, t)
        out.extend((clock.now - start, f) for f in deb.due())
        while i < len(queue) and start + queue[i][0] <= clock.now:
            _, key, change = queue[i]
            deb.record(key, change)
            i += 1
    return out


def test_one_event_flushes_after_the_quiet_period() -> None:
    clock = Clock()
    deb: Debouncer[str] = Debouncer(0.1, 1.0, clock)
    deb.record("a.txt")
    clock.now += 0.099
    assert deb.due() == []
    assert "a.txt" in deb
    clock.now += 0.002
    assert deb.due() == [Flush("a.txt")]
    assert len(deb) == 0 and deb.next_deadline() is None


def test_a_burst_is_one_flush_after_its_last_event() -> None:
    clock = Clock()
    deb: Debouncer[str] = Debouncer(0.1, 1.0, clock)
    events = [(i * 0.005, "a.txt", Change.CHANGED) for i in range(40)]  # 200 ms of writes
    flushes = run_script(deb, clock, events, until=5)
    assert [f.key for _, f in flushes] == ["a.txt"]
    at, flush = flushes[0]
    assert flush.events == 40
    assert at == pytest.approx(39 * 0.005 + 0.1)


def test_continuous_writes_are_flushed_at_max_delay_then_back_off() -> None:
    clock = Clock()
    deb: Debouncer[str] = Debouncer(0.1, 1.0, clock)
    events = [(i * 0.05, "log.txt", Change.CHANGED) for i in range(70)]  # 3.5 s, never quiet
    flushes = run_script(deb, clock, events, until=10)
    times = [t for t, _ in flushes]
    # the cap after 1 s, then twice as long (2 s) while still busy; the last one after the
    # busy path's quiet period (0.1 s doubled per window in a row: 0.4 s) after the last write
    assert times == pytest.approx([1.0, 3.0, 69 * 0.05 + 0.4], abs=0.051)
    assert sum(f.events for _, f in flushes) == 70


def test_back_off_is_bounded_and_ends_after_a_pause() -> None:
    clock = Clock()
    deb: Debouncer[str] = Debouncer(0.1, 1.0, clock, max_backoff=4.0)
    busy = [(i * 0.05, "f", Change.CHANGED) for i in range(400)]  # 20 s, never quiet
    times = [t for t, _ in run_script(deb, clock, busy, until=25)]
    # caps 1, 2, 4, then 4 again (bounded by max_backoff x max_delay), then the quiet close
    # (the quiet period grew too, bounded by max_delay)
    assert times == pytest.approx([1.0, 3.0, 7.0, 11.0, 15.0, 19.0, 399 * 0.05 + 1.0], abs=0.051)
    clock.now += 30  # long pause: the path's next save is an isolated one again
    later = run_script(deb, clock, [(0.0, "f", Change.CHANGED)], until=5)
    assert [t for t, _ in later] == pytest.approx([0.1], abs=0.001)


def test_a_storm_on_many_files_costs_a_few_flushes_each() -> None:
    """10,000 writes to 100 files in 5 s, round-robin: the issue's storm, scripted."""
    clock = Clock()
    deb: Debouncer[str] = Debouncer(0.1, 1.0, clock)
    events = [(i * 0.0005, f"f{i % 100}", Change.CHANGED) for i in range(10_000)]
    flushes = run_script(deb, clock, events, until=30)
    assert len(flushes) <= 300
    last = {f"f{i % 100}": i * 0.0005 for i in range(10_000)}
    final = {f.key: at for at, f in flushes}
    assert all(final[k] >= last[k] for k in last)


def test_paths_are_debounced_independently() -> None:
    clock = Clock()
    deb: Debouncer[str] = Debouncer(0.1, 1.0, clock, adapt=0)
    events = [(0.0, "a", Change.CHANGED), (0.05, "b", Change.CHANGED), (0.12, "b", Change.CHANGED)]
    flushes = run_script(deb, clock, events, until=5)
    assert [(round(t, 3), f.key) for t, f in flushes] == [(0.1, "a"), (0.22, "b")]


def test_an_editor_save_keeps_the_plain_quiet_period() -> None:
    clock = Clock()
    deb: Debouncer[str] = Debouncer(0.1, 1.0, clock)
    # vim: rename to backup, create, write, close, all within a few milliseconds
    events = [(i * 0.001, "a.js", Change.CHANGED) for i in range(5)]
    flushes = run_script(deb, clock, events, until=5)
    assert [round(t, 4) for t, _ in flushes] == [0.104]


def jittery_rhythm(keys: list[str], period: float, seconds: float, seed: int = 1) -> list[Ev]:
    """Round-robin writes, each path every ``period`` on average, with gaps up to 3 periods
    (what a loaded machine does to a paced writer), 3 events per write."""
    rng = random.Random(seed)
    events: list[Ev] = []
    for key in keys:
        t = rng.random() * period
        while t < seconds:
            events += [(t + i * 0.0001, key, Change.CHANGED) for i in range(3)]
            t += period * rng.choice([0.5, 1.0, 1.0, 1.0, 1.5, 2.5, 3.0])
    return events


def test_a_steady_writer_is_flushed_by_the_cap_not_by_every_pause() -> None:
    keys = [f"f{i}" for i in range(10)]
    events = jittery_rhythm(keys, 0.05, 5.0)
    counts = {}
    for adapt in (0.0, 4.0):
        clock = Clock()
        deb: Debouncer[str] = Debouncer(0.1, 1.0, clock, adapt=adapt, backoff=1.0)
        counts[adapt] = len(run_script(deb, clock, events, until=20))
    # the cap alone gives 5 per path over 5 s, plus the final one
    assert counts[4.0] <= 7 * len(keys) < counts[0.0]
    # and with the default back-off: caps after 1 s and 2 s more, then the final one
    clock = Clock()
    deb = Debouncer(0.1, 1.0, clock)
    assert len(run_script(deb, clock, events, until=20)) <= 4 * len(keys)


def test_the_rhythm_is_forgotten_after_a_pause() -> None:
    clock = Clock()
    deb: Debouncer[str] = Debouncer(0.1, 1.0, clock)
    storm = [(i * 0.05, "a", Change.CHANGED) for i in range(40)]  # 2 s of writes
    later = [(4.0, "a", Change.CHANGED)]  # one save, 2 s after the storm
    flushes = run_script(deb, clock, storm + later, until=10)
    assert flushes[-1][0] == pytest.approx(4.1)
    # and the next single save, after another pause, keeps the plain quiet period
    again = run_script(deb, clock, [(3.0, "a", Change.CHANGED)], until=5)
    assert [t for t, _ in again] == [pytest.approx(3.1)]


def test_zero_quiet_period_does_not_adapt() -> None:
    clock = Clock()
    deb: Debouncer[str] = Debouncer(0.0, 1.0, clock)
    flushes = run_script(deb, clock, [(i * 0.05, "a", Change.CHANGED) for i in range(10)], 5)
    assert len(flushes) == 10


def test_created_then_gone_is_transient_and_nothing_else_is() -> None:
    clock = Clock()
    deb: Debouncer[str] = Debouncer(0.1, 1.0, clock)
    deb.record("tmp", Change.CREATED)
    deb.record("tmp", Change.CHANGED)
    deb.record("tmp", Change.GONE)  # an editor's temporary file renamed over its target
    deb.record("old", Change.GONE)
    deb.record("old", Change.CREATED)  # deleted and made again: it exists
    deb.record("new", Change.CREATED)
    deb.record("gone", Change.CHANGED)
    deb.record("gone", Change.GONE)  # existed before the window: the store must hear of it
    deb.record("again", Change.CREATED)
    deb.record("again", Change.GONE)
    deb.record("again", Change.CREATED)  # exists at the end
    clock.now += 0.2
    got = {f.key: f.transient for f in deb.due()}
    assert got == {"tmp": True, "old": False, "new": False, "gone": False, "again": False}


def test_zero_quiet_period_flushes_at_once() -> None:
    clock = Clock()
    deb: Debouncer[str] = Debouncer(0.0, 1.0, clock)
    deb.record("a")
    assert deb.next_deadline() == clock.now
    assert deb.due() == [Flush("a")]


def test_drain_returns_everything_oldest_first() -> None:
    clock = Clock()
    deb: Debouncer[str] = Debouncer(0.1, 1.0, clock)
    deb.record("b")
    clock.now += 0.01
    deb.record("a")
    assert [f.key for f in deb.drain()] == ["b", "a"]
    assert len(deb) == 0 and deb.due() == [] and deb.next_deadline() is None


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError):
        Debouncer(-1, 1.0)
    with pytest.raises(ValueError):
        Debouncer(0.1, 0)


@pytest.mark.parametrize("seed", range(5))
def test_random_script_keeps_both_promises(seed: int) -> None:
    """Random events on 20 keys: every flush is justified (quiet or capped), every event is
    followed by a flush of its key within max_delay, and the last event of every key is."""
    quiet, cap = 0.1, 1.0
    rng = random.Random(seed)
    keys = [f"f{i}" for i in range(20)]
    events: list[Ev] = []
    t = 0.0
    for _ in range(3000):
        t += rng.expovariate(1 / 0.004)  # ~250 events/s, bursty
        events.append((t, rng.choice(keys), rng.choice(list(Change))))
    clock = Clock()
    deb: Debouncer[str] = Debouncer(quiet, cap, clock, backoff=1.0)
    flushes = run_script(deb, clock, events, until=t + 10)

    flush_times: dict[str, list[float]] = {k: [] for k in keys}
    for at, f in flushes:
        flush_times[f.key].append(at)
    for key in keys:
        times = [e[0] for e in events if e[1] == key]
        done = flush_times[key]
        # justified: each flush closes a window whose last event is `quiet` old, or whose first
        # event is `cap` old.
        prev = -1.0
        for at in done:
            window = [e for e in times if prev < e <= at]
            assert window, f"{key}: flush at {at} with no event"
            assert at - window[-1] >= quiet - 1e-9 or at - window[0] >= cap - 1e-9
            prev = at
        # prompt: every event is flushed within the cap (quiet < cap here)
        for e in times:
            assert any(e <= at <= e + cap + 1e-9 for at in done), f"{key}: event at {e} late"
        assert done and done[-1] >= times[-1]
    assert len(deb) == 0
