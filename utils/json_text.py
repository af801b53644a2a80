"""JSON from users' files and command lines, where hostile input fails like any malformed JSON.

Python's reader raises ``RecursionError`` on deeply nested arrays (``[[[[...``) and a bare
``ValueError`` on integers longer than ``sys.get_int_max_str_digits()`` (4300 digits): neither
is the ``json.JSONDecodeError`` every reader of puzzles and examples reports as one line. Here
both are."""
from __future__ import annotations

import json
import sys
from typing import Any


def loads(text: str) -> Any:
    """``json.loads(text)``; nesting too deep for the reader and integers too long to convert
    raise ``json.JSONDecodeError`` like any other malformed JSON."""
    try:
        return json.loads(text)
    except RecursionError:
        raise json.JSONDecodeError(f"nested deeper than the JSON reader allows (about {sys.getrecursionlimit()} levels)",
                                   text, 0) from None
    except json.JSONDecodeError:
        raise
    except ValueError as e:  # "Exceeds the limit (4300 digits) for integer string conversion"
        raise json.JSONDecodeError(f"a number too long to read ({' '.join(str(e).split())[:80]})", text, 0) from None
