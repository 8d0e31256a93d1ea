"""Names and texts shared by the rendered rule files: alert names and Go-template-safe literals."""

from __future__ import annotations

import re

__all__ = ["alert_name", "template_literal"]

_WORD = re.compile(r"[a-z0-9]+")


def alert_name(name: str) -> str:
    """``upload-error-rate`` -> ``UploadErrorRate``; a name that would start with a digit gets ``Rule`` first."""
    camel = "".join(word[:1].upper() + word[1:] for word in _WORD.findall(name.lower()))
    return camel if camel[:1].isalpha() else f"Rule{camel}"


def template_literal(text: str) -> str:
    """Text safe inside a Go template (Prometheus annotations): ``{{`` written out rather than opening an action."""
    return text.replace("{{", '{{ "{{" }}')
