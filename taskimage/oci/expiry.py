"""Registry hygiene: the ``quay.expires-after`` label and the durations it and ``gc`` take.

Quay deletes a tag when the image pushed to it carries ``quay.expires-after`` (a config label
on images, a manifest annotation on artifacts), as Konflux sets it on per-run images. Other
registries ignore it; ``taskimage gc`` prunes there.
"""

from __future__ import annotations

import re

from taskimage.errors import UsageError

EXPIRES_LABEL = "quay.expires-after"
_DURATION_RE = re.compile(r"^([1-9][0-9]*)([smhdw])$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def check_duration(value: str, source: str) -> str:
    """A duration as Quay spells it: a positive number and a unit, s m h d or w (``5d``, ``12h``)."""
    value = (value or "").strip()
    if not _DURATION_RE.fullmatch(value):
        raise UsageError(f"{source}: {value!r} is not a duration like 5d, 12h or 2w (units s, m, h, d, w)")
    return value


def seconds(value: str, source: str) -> int:
    m = _DURATION_RE.fullmatch(check_duration(value, source))
    assert m is not None
    return int(m.group(1)) * _SECONDS[m.group(2)]
