"""The short SHA-256 keys (labelaudit.core.digest) are the digests they replace."""

import hashlib

import pytest

from labelaudit.core.digest import ShortDigest, short_digest


@pytest.mark.parametrize("length", [16, 20])
def test_short_digest_is_the_cut_sha256(length):
    data = b"labelaudit \x00\xff key"
    assert short_digest(data, length) == hashlib.sha256(data).hexdigest()[:length]
    assert len(short_digest(data, length)) == length


def test_pieces_hash_as_their_concatenation():
    h = ShortDigest(16, b"first:")
    for piece in (b"second", b"", b"\x1fthird"):
        h.update(piece)
    assert h.hexdigest() == hashlib.sha256(b"first:second\x1fthird").hexdigest()[:16]
    assert h.hexdigest() == short_digest(b"first:second\x1fthird", 16)
