"""Whether a marker file was written by this user's labelaudit: a keyed signature.

A cleaned dataset links to the images of the dataset it came from, and its marker
(``.labelaudit-cleaned.json``) names that source so that the links are admitted
without ``--follow-symlinks``. A marker is a plain file anyone can write, so a
dataset received from someone else could name any directory as its "source". The
marker therefore carries an HMAC of what it admits, made with a random key kept in
the user's configuration directory (like git's ``safe.directory``, trust is a
setting of the user's, not of the data): a marker written elsewhere, or edited,
admits nothing, and its links need ``--follow-symlinks`` like any other.

The key lives in ``$LABELAUDIT_CONFIG_DIR`` or ``$XDG_CONFIG_HOME/labelaudit`` (by
default ``~/.config/labelaudit``), as ``marker.key``, readable by its owner only.
Where no key can be kept (a read-only home), markers are unsigned and admit nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import stat
from pathlib import Path
from typing import Any

KEY_FILE = "marker.key"
_KEY_BYTES = 32


def config_dir() -> Path:
    """The directory of the user's labelaudit settings (the marker key)."""
    explicit = os.environ.get("LABELAUDIT_CONFIG_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "labelaudit"


def _read_key(path: Path) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
            return None  # a key others could read or plant is no key
        data = os.read(fd, _KEY_BYTES + 1)
    finally:
        os.close(fd)
    return data if len(data) == _KEY_BYTES else None


def _key(create: bool) -> bytes | None:
    path = config_dir() / KEY_FILE
    key = _read_key(path)
    if key is not None or not create:
        return key
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:  # another process made it first
        return _read_key(path)
    except OSError:
        return None
    try:
        os.write(fd, secrets.token_bytes(_KEY_BYTES))
    finally:
        os.close(fd)
    return _read_key(path)


def _digest(key: bytes, payload: Any) -> str:
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hmac.new(key, text.encode("ascii"), hashlib.sha256).hexdigest()


def sign(payload: Any) -> str | None:
    """The signature of a JSON-serialisable ``payload`` (``None``: no key can be kept)."""
    key = _key(create=True)
    return None if key is None else _digest(key, payload)


def verify(payload: Any, signature: object) -> bool:
    """True when ``signature`` is this user's signature of ``payload``."""
    if not isinstance(signature, str):
        return False
    key = _key(create=False)
    return key is not None and hmac.compare_digest(_digest(key, payload), signature)
