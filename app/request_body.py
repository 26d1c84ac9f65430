"""Reads a request's JSON body: at most MAX_BODY_BYTES of UTF-8 JSON sent as
application/json, an object without repeated keys or non-standard numbers.
Anything else is a ValidationError with the status it deserves (413, 415, 400).
"""
from __future__ import annotations

import json

from werkzeug.exceptions import RequestEntityTooLarge

from app.validation import ValidationError

# A prefix of 1000 characters, each escaped as a 12-byte surrogate pair, and every other
# parameter fit with room to spare; nginx allows the same (client_max_body_size).
MAX_BODY_BYTES = 16 * 1024


def json_body(request) -> object:
    """The parsed body of a Flask request."""
    if request.mimetype != "application/json":
        raise ValidationError(f"the body must be JSON sent as Content-Type: application/json, "
                              f"got {request.mimetype or 'no Content-Type'!r}", status=415)
    charset = request.mimetype_params.get("charset", "utf-8").lower()
    if charset not in ("utf-8", "utf8"):
        raise ValidationError(f"JSON must be UTF-8, got charset={charset!r}", status=415)
    if (request.content_length or 0) > MAX_BODY_BYTES:
        raise _too_large()
    try:
        data = request.get_data(cache=False)  # also capped for a body without a length
    except RequestEntityTooLarge:
        raise _too_large() from None
    try:
        return json.loads(data.decode("utf-8"), object_pairs_hook=_without_repeats,
                          parse_constant=_refuse_constant)
    except RepeatedKey as e:
        raise ValidationError(f"{e.name} is given more than once", e.name) from None
    except (ValueError, RecursionError) as e:
        # ValueError covers bad UTF-8, bad JSON and integers too long to read.
        raise ValidationError(f"the body is not valid JSON: {str(e)[:120]}") from None


class RepeatedKey(ValueError):
    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


def _without_repeats(pairs):
    names = set()
    for name, _ in pairs:
        if name in names:
            raise RepeatedKey(name)
        names.add(name)
    return dict(pairs)


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _too_large() -> ValidationError:
    return ValidationError(f"the body must be at most {MAX_BODY_BYTES} bytes", status=413)
