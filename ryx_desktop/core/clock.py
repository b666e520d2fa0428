"""The real clock behind the ``Clock`` protocol: the event loop's monotonic time."""

from __future__ import annotations

import asyncio
import time


class MonotonicClock:
    """Monotonic seconds and real asyncio sleeps."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
