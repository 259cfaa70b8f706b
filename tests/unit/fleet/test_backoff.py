from appliance.fleet.backoff import Backoff


def test_delays_grow_to_the_cap_and_are_jittered():
    b = Backoff(base=1, cap=8, floor=0, rand=lambda: 1.0)
    assert [b.next_delay() for _ in range(6)] == [1, 2, 4, 8, 8, 8]
    b.reset()
    assert b.next_delay() == 1


def test_full_jitter_spreads_delays_over_the_whole_window():
    b = Backoff(base=1, cap=100)
    b.attempt = 10
    delays = []
    for _ in range(200):
        b.attempt = 10
        delays.append(b.next_delay())
    assert min(delays) < 20 and max(delays) > 80  # not in lockstep
    assert all(0.2 <= d <= 100 for d in delays)
