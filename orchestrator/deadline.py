"""The one deadline loop every wait of the testbed uses.

    d = Deadline(timeout)
    for _ in d.poll(0.5):
        if ready():
            break
    else:
        raise SomeError(f"... within {d.seconds} s")

`poll` yields at least once, sleeps between attempts (never past the deadline), makes one
last attempt at the deadline and then stops, so the `else` branch is the timeout. Nested waits share one budget
by passing the Deadline (or `d.left`) down instead of the stage's full timeout.
"""

import time


class Deadline:
    def __init__(self, seconds):
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    @property
    def left(self):
        """Seconds left, never negative."""
        return max(0.0, self.end - time.monotonic())

    def expired(self):
        return time.monotonic() >= self.end

    def slice(self, at_most):
        """A sub-wait's timeout: at most `at_most` seconds, never past the deadline (and > 0)."""
        return max(0.001, min(at_most, self.left))

    def attempt(self, at_most, floor=5.0):
        """One poll attempt's timeout: as slice(), but at least `floor` s, so the last attempt (made
        at the deadline) can still run and the poll ends in its own "not within N s" message."""
        return max(floor, self.slice(at_most))

    def poll(self, interval, max_interval=None, backoff=1.0):
        """Yield the attempt number (0, 1, ...) until the deadline; sleep `interval` between
        attempts, growing by `backoff` up to `max_interval`."""
        attempt = 0
        delay = interval
        while True:
            yield attempt
            attempt += 1
            if self.expired():
                return
            time.sleep(min(delay, self.left))  # the attempt after this sleep is the last one if time is up
            delay = min(delay * backoff, max_interval or delay * backoff)
