"""Window arithmetic and window striping (pure, vectorised).

Time is cut into windows of ``window_ns`` nanoseconds: window ``w`` covers
``[w * window_ns, (w + 1) * window_ns)``. Window ``w`` of story ``s`` belongs
to grapher ``stripe(s, w, G)``, so one hot story still spreads over every grapher.
"""

from __future__ import annotations

import numpy as np

NEVER = np.iinfo(np.int64).min  # a watermark before all time
FOREVER = np.iinfo(np.int64).max  # a watermark after all time (the source has ended)


def window_of(t: int, window_ns: int) -> int:
    """The window holding time ``t``; the watermark sentinels NEVER and FOREVER map to themselves."""
    if t == NEVER or t == FOREVER:
        return t
    return t // window_ns


def window_start(w: int, window_ns: int) -> int:
    return w * window_ns


def window_end(w: int, window_ns: int) -> int:
    """First nanosecond after window ``w``."""
    return (w + 1) * window_ns


def is_closed(w: int, watermark: int, window_ns: int) -> bool:
    """A window is closed once the watermark (no later event can be older) reached its end."""
    return watermark >= window_end(w, window_ns)


def _mix64(x: int) -> int:
    # splitmix64 finaliser: a cheap, well-spread 64-bit hash
    x &= 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return x ^ (x >> 31)


def stripe(story: int, window: int, n_graphers: int) -> int:
    """Index (0..n_graphers-1) of the grapher that owns window ``window`` of story ``story``."""
    return _mix64((story << 40) ^ (window & 0xFFFFFFFFFF) ^ (window >> 40 << 20)) % n_graphers
