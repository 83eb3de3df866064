"""Simulated clock: wall-clock epoch at start, running `speed` times real time, plus jumps."""
import threading
import time


class Clock:
    def __init__(self, speed=1.0, start=None):
        self.speed = float(speed)
        self._lock = threading.Lock()
        self._start_sim = float(start if start is not None else time.time())
        self._start_mono = time.monotonic()
        self._offset = 0.0

    def now(self):
        return self._start_sim + (time.monotonic() - self._start_mono) * self.speed + self._offset

    def advance(self, seconds):
        with self._lock:
            self._offset += float(seconds)
        return self.now()

    def real_seconds(self, sim_seconds):
        """How long `sim_seconds` of simulated time take in real time."""
        return sim_seconds / self.speed if self.speed > 0 else float("inf")
