# -*- coding: utf-8 -*-
# Copyright: llmops.vastai contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one poll/backoff loop of the collection (waits, re-reads, retries, log fetches)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time


def attempts(tries=None, timeout=None, delay=1.0, factor=1.0, cap=None, sleep=None, clock=None):
    """Yield 0, 1, 2, ... and sleep between the yields.

    Ends after ``tries`` yields, or once ``timeout`` seconds have passed since the first one
    (the last sleep is cut short so that one final attempt falls on the deadline). The delay
    starts at ``delay`` and is multiplied by ``factor`` after every sleep, up to ``cap``:
    ``factor=1`` polls at a fixed interval, ``factor=2`` backs off exponentially.
    ``sleep``/``clock`` are injectable so tests need not wait.
    """
    sleep = sleep or time.sleep
    clock = clock or time.monotonic
    deadline = None if timeout is None else clock() + timeout
    current = delay
    n = 0
    while True:
        yield n
        n += 1
        if tries is not None and n >= tries:
            return
        pause = current
        if deadline is not None:
            left = deadline - clock()
            if left <= 0:
                return
            pause = min(pause, left)
        if pause > 0:
            sleep(pause)
        current = current * factor
        if cap is not None:
            current = min(current, cap)
