"""Small pieces the page-based readers share (Berkeley DB, DB 1.85, detection)."""

from __future__ import annotations


def is_power_of_two(n: int) -> bool:
    """Whether ``n`` is 1, 2, 4, 8, ... (page and bucket sizes must be)."""
    return n > 0 and n & (n - 1) == 0


class PageBitmap:
    """A set of page numbers in one bit per page, so memory stays flat on huge files."""

    __slots__ = ("bits",)

    def __init__(self, pages: int):
        self.bits = bytearray((pages >> 3) + 1)

    def add(self, n: int) -> bool:
        """Mark page ``n``; False if it was marked already (a loop, or a shared page)."""
        byte, bit = n >> 3, 1 << (n & 7)
        if self.bits[byte] & bit:
            return False
        self.bits[byte] |= bit
        return True
