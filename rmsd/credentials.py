"""Find values that look like credentials anywhere in a recipe or pool, without ever showing them.

API keys belong in the environment (a pool names the variable: `api_key_env`); a key pasted
into YAML would be sent to servers, copied into run folders and shared with the recipe.
`find_credentials(tree)` walks every mapping and list of a loaded YAML tree (including
`openai.extra_body`, custom-teacher `options`, headers, anything) and returns
`(yaml.path, what it looks like)` for:
- known key formats, wherever they appear in a string: OpenAI `sk-` / `sk-proj-`,
  Anthropic `sk-ant-`, Google `AIza`, Hugging Face `hf_`, Groq `gsk_`, xAI `xai-`, GitHub
  `ghp_` (and `gho_`, `ghu_`, `ghs_`, `ghr_`, `github_pat_`), AWS `AKIA`/`ASIA` key ids,
  `Bearer <token>`, PEM private keys;
- long high-entropy tokens (12+ characters without spaces, mixed letters and digits or
  cases, 3+ bits of entropy per character) under a key-like name (`api_key`, `token`,
  `secret`, `password`, `authorization`, `credential`, ...), except values that name an
  environment variable (`OPENAI_API_KEY`), paths and URLs.
How it differs from a secret scanner such as detect-secrets: it runs on the parsed config
(so the path is the YAML path a user can find), it is strict by design (a recipe has no
reason to hold a token), and its messages never contain the value or a part of it.

    rmsd validate recipes/ teachers/      # every finding, one line each, value not shown
"""

from __future__ import annotations

import math
import os
import re
from collections import Counter
from collections.abc import Iterable
from typing import Any

_B = r"(?<![A-Za-z0-9])"  # a key starts at a token boundary: "task-..." is not an "sk-" key
KNOWN_FORMATS: tuple[tuple[str, re.Pattern], ...] = tuple((what, re.compile(pattern)) for what, pattern in (
    ("an Anthropic API key", _B + r"sk-ant-[A-Za-z0-9_\-]{16,}"),
    ("an OpenAI API key", _B + r"sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{16,}"),
    ("a Google API key", _B + r"AIza[0-9A-Za-z_\-]{30,}"),
    ("a Hugging Face token", _B + r"hf_[A-Za-z0-9]{20,}"),
    ("a Groq API key", _B + r"gsk_[A-Za-z0-9]{20,}"),
    ("an xAI API key", _B + r"xai-[A-Za-z0-9]{20,}"),
    ("a GitHub token", _B + r"(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,})"),
    ("an AWS access key id", _B + r"(?:AKIA|ASIA)[0-9A-Z]{16}(?![0-9A-Z])"),
    ("a bearer token", r"(?i:\bbearer)\s+[A-Za-z0-9\-._~+/]{8,}=*"),
    ("a private key", r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
))
_KEY_WORDS = frozenset({"key", "apikey", "token", "secret", "password", "passwd", "pwd", "authorization", "auth",
                        "credential", "credentials", "bearer", "cookie", "session"})
_ENV_NAME = re.compile(r"[A-Z][A-Z0-9_]*")


def _words(name: str) -> set[str]:
    """The words of a key name: api_key, apiKey, X-Api-Key -> {api, key, apikey}."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name)
    words = [w.lower() for w in re.split(r"[^A-Za-z0-9]+", spaced) if w]
    return set(words) | {a + b for a, b in zip(words, words[1:], strict=False)}


def _high_entropy(value: str) -> bool:
    if len(value) < 12 or any(c.isspace() for c in value) or _ENV_NAME.fullmatch(value):
        return False
    if value.startswith(("/", "./", "../", "~")) or "://" in value:
        return False  # a path or a URL, not a token
    kinds = sum((any(c.islower() for c in value), any(c.isupper() for c in value), any(c.isdigit() for c in value)))
    if kinds < 2:
        return False
    counts = Counter(value)
    entropy = -sum(n / len(value) * math.log2(n / len(value)) for n in counts.values())
    return entropy >= 3.0


def _kind(value: str, name: str | None) -> str | None:
    for what, pattern in KNOWN_FORMATS:
        if pattern.search(value):
            return what
    if name is not None and _words(name) & _KEY_WORDS and _high_entropy(value):
        return f"a long random token under the key-like name {name!r}"
    return None


def find_credentials(tree: Any, path: str = "") -> list[tuple[str, str]]:
    """(YAML path, what it looks like) of every credential-like value in a parsed YAML tree."""
    found: list[tuple[str, str]] = []

    def walk(node: Any, where: str, name: str | None) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                key = str(k)
                sub = f"{where}.{key}" if where else key
                if _kind(key, None) is not None:  # a key pasted as a mapping key
                    found.append((f"{where or '(top level)'} (a key name)", _kind(key, None) or ""))
                walk(v, sub, key)
        elif isinstance(node, (list, tuple)):
            for i, v in enumerate(node):
                walk(v, f"{where}.{i}" if where else str(i), name)
        elif isinstance(node, str):
            what = _kind(node, name)
            if what is not None:
                found.append((where or "(top level)", what))

    walk(tree, path, None)
    return found


def credential_problems(tree: Any, where: str, path: str = "") -> list[str]:
    """One line per finding: `where: yaml.path: looks like ...` (the value is never part of it)."""
    return [f"{where}: {p}: looks like a credential ({what}); keys are never written in a recipe or pool: export "
            "it in an environment variable and name the variable (api_key_env); the value is not shown here"
            for p, what in find_credentials(tree, path)]


class Redactor:
    """The API keys a run holds, replaced by *** in any text bound for a log, a store or an error: what the
    online runner and the batch runner both show the user. Values under 4 characters are not matched (a
    one-letter "key" would star out every message)."""

    def __init__(self, secrets: Iterable[str] = ()):
        self.secrets: list[str] = []
        for s in secrets:
            self.add(s)

    @classmethod
    def of_pool(cls, pool: Any) -> Redactor:
        """The keys of a pool's openai teachers, read from their `api_key_env` variables."""
        return cls(os.environ.get(t.openai.api_key_env, "") for t in pool.teachers if t.openai is not None)

    def add(self, secret: str) -> None:
        if secret and len(secret) >= 4 and secret not in self.secrets:
            self.secrets.append(secret)

    def __call__(self, text: str) -> str:
        for s in self.secrets:
            text = text.replace(s, "***")
        return text
