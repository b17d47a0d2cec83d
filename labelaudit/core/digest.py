"""Short SHA-256 keys: the one place a digest is cut to a key's length.

Caches, fingerprints and model-reuse keys name their entries by the first 16 or 20
hex digits of a SHA-256 (64 or 80 bits: no collision in any realistic number of
entries, short enough for a directory name). The length stays an argument, so
every key keeps the length it always had and existing caches stay valid.
"""

from __future__ import annotations

import hashlib


class ShortDigest:
    """A SHA-256 fed in pieces (as :func:`hashlib.sha256`), read as its first digits.

    Parameters
    ----------
    length : int
        How many hex digits :meth:`hexdigest` returns (16 or 20 in labelaudit).
    data : bytes
        The first piece (optional).
    """

    def __init__(self, length: int, data: bytes = b"") -> None:
        self.length = length
        self._hash = hashlib.sha256(data)

    def update(self, data: bytes) -> None:
        """Feed the next piece."""
        self._hash.update(data)

    def hexdigest(self) -> str:
        """The first :attr:`length` hex digits of the SHA-256 of every piece so far."""
        return self._hash.hexdigest()[: self.length]


def short_digest(data: bytes, length: int) -> str:
    """The first ``length`` hex digits of the SHA-256 of ``data``.

    Parameters
    ----------
    data : bytes
        What to hash.
    length : int
        How many hex digits to keep (16 or 20 in labelaudit).

    Returns
    -------
    str
        ``hashlib.sha256(data).hexdigest()[:length]``.
    """
    return ShortDigest(length, data).hexdigest()
