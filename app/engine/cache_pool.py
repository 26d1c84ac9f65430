"""Places in the key/value cache, handed out to requests in pages.

The cache is one pool of positions shared by all running requests, allocated
once. A request reserves the places for its prompt and all the tokens it may
write when it starts (its length is known up front), so it can never run out
half way, and gives them back when it ends. Requests of 256 tokens then use a
quarter of what a fixed 1024-position slot each would hold.

The episodes of one request share the pages of their prompt, read only: a page
returns to the pool when the last sequence holding it gives it back.
"""
from __future__ import annotations

import heapq

import numpy as np

PAGE = 16  # positions per page: big enough that a row's places are mostly contiguous


def pages_for(positions: int, page: int = PAGE) -> int:
    return -(-positions // page)


class CachePool:
    """The pool's whole geometry: the decoder allocates `places` places, warms up
    and pads batches on `scratch_places`, and requests use the rest."""

    def __init__(self, size: int, page: int = PAGE):
        self.page = page
        self.pages = size // page
        # Page 0 is scratch: padding rows write there and nobody reads it.
        self.scratch = 0
        self._free = list(range(1, self.pages))  # a heap: low pages first, so memory use stays compact
        self._holders: dict[int, int] = {}  # page in use -> sequences holding it

    @classmethod
    def for_positions(cls, positions: int, page: int = PAGE) -> CachePool:
        """A pool where requests can use at least `positions` places."""
        return cls((pages_for(positions, page) + 1) * page, page)

    @property
    def places(self) -> int:
        """Places the decoder allocates, the scratch page's included."""
        return self.pages * self.page

    @property
    def scratch_places(self) -> np.ndarray:
        return np.arange(self.scratch * self.page, (self.scratch + 1) * self.page, dtype=np.int32)

    @property
    def size(self) -> int:
        """Places that requests can use."""
        return (self.pages - 1) * self.page

    def holds(self, pages: int) -> bool:
        """Whether that many pages fit in the pool at all (when nothing else runs)."""
        return pages <= self.pages - 1

    @property
    def free_places(self) -> int:
        return len(self._free) * self.page

    def reserve(self, positions: int) -> tuple[list[int], np.ndarray] | None:
        """Pages and the place of each position 0..positions-1, or None when
        the pool has not enough room now."""
        count = pages_for(positions, self.page)
        if count > len(self._free):
            return None
        pages = [heapq.heappop(self._free) for _ in range(count)]
        self._holders.update(dict.fromkeys(pages, 1))
        places = (np.array(pages, np.int32)[:, None] * self.page
                  + np.arange(self.page, dtype=np.int32)[None, :]).ravel()[:positions]
        return pages, places

    def share(self, pages: list[int]) -> None:
        """One more sequence holds these pages (and reads them only)."""
        for page in pages:
            self._holders[page] += 1

    def release(self, pages: list[int]) -> None:
        for page in pages:
            self._holders[page] -= 1
            if not self._holders[page]:
                del self._holders[page]
                heapq.heappush(self._free, page)
