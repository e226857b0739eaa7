"""Error text for the one-line failures of the command lines and the node's start (torch-free)."""

from __future__ import annotations

import re


def one_line(err: BaseException | str, limit: int = 300) -> str:
    """The first line of an error message, without torch's advice to load untrusted files unsafely."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    cut = text.find("Weights only load failed")  # torch then suggests weights_only=False: never do that
    if cut >= 0:
        head = text[:cut] + "refused by safe loading: not plain tensor data"
        text = head + ")" * max(head.count("(") - head.count(")"), 0)
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)
    return text if len(text) <= limit else text[: limit - 3] + "..."
