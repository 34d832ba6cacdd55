"""BigQuery's procedural language, as far as the project's scripts use it: parsed into a small tree.

``BEGIN ... EXCEPTION WHEN ERROR THEN ... END``, ``IF cond THEN ... [ELSE ...] END IF``,
``RAISE USING MESSAGE = expr``, ``BEGIN TRANSACTION`` / ``COMMIT TRANSACTION`` / ``ROLLBACK TRANSACTION``;
every other statement is SQL. Statements end at top-level semicolons (strings, quoted names and
comments are skipped).
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Statement:
    text: str


@dataclass(frozen=True)
class Transaction:
    verb: str  # BEGIN | COMMIT | ROLLBACK


@dataclass(frozen=True)
class Raise:
    message: str  # an expression


@dataclass(frozen=True)
class If:
    condition: str
    then: list[Node]
    otherwise: list[Node] = field(default_factory=list)


@dataclass(frozen=True)
class Block:
    body: list[Node]
    handler: list[Node] | None = None


Node = Statement | Transaction | Raise | If | Block


class ScriptSyntaxError(ValueError):
    pass


def split_statements(text: str) -> list[str]:
    """Top-level ``;``-separated pieces, comments removed."""
    out: list[str] = []
    buf: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in "'\"`":
            end = i + 1
            while end < n and text[end] != c:
                end += 2 if text[end] == "\\" else 1
            buf.append(text[i : end + 1])
            i = end + 1
        elif text.startswith("--", i) or c == "#":
            while i < n and text[i] != "\n":
                i += 1
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = n if end < 0 else end + 2
        elif c == ";":
            out.append("".join(buf).strip())
            buf = []
            i += 1
        else:
            buf.append(c)
            i += 1
    out.append("".join(buf).strip())
    return [s for s in out if s]


def _top_level_then(text: str) -> int:
    """Index of the first ``THEN`` outside parentheses and quotes, or -1."""
    depth, i, n = 0, 0, len(text)
    while i < n:
        c = text[i]
        if c in "'\"`":
            end = i + 1
            while end < n and text[end] != c:
                end += 2 if text[end] == "\\" else 1
            i = end + 1
            continue
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif (
            depth == 0
            and re.match(r"THEN\b", text[i : i + 5], re.I)
            and (i == 0 or not text[i - 1].isalnum())
        ):
            return i
        i += 1
    return -1


class _Parser:
    def __init__(self, pieces: list[str]) -> None:
        self.items = deque(pieces)

    def push(self, text: str) -> None:
        if text.strip():
            self.items.appendleft(text.strip())

    def nodes(self, stops: frozenset[str]) -> tuple[list[Node], str]:
        out: list[Node] = []
        while self.items:
            text = self.items.popleft()
            upper = re.sub(r"\s+", " ", text.upper())
            if upper == "END IF" and "END IF" in stops:
                return out, "END IF"
            if upper == "END" and "END" in stops:
                return out, "END"
            handler = re.match(r"EXCEPTION\s+WHEN\s+ERROR\s+THEN\b(.*)$", text, re.S | re.I)
            if handler and "EXCEPTION" in stops:
                self.push(handler.group(1))
                return out, "EXCEPTION"
            otherwise = re.match(r"ELSE\b(.*)$", text, re.S | re.I)
            if otherwise and "ELSE" in stops:
                self.push(otherwise.group(1))
                return out, "ELSE"
            tx = re.fullmatch(r"(BEGIN|COMMIT|ROLLBACK)(\s+TRANSACTION)?", upper)
            if tx and (tx.group(1) != "BEGIN" or tx.group(2)):
                out.append(Transaction(tx.group(1)))
                continue
            block = re.match(r"BEGIN\b(.*)$", text, re.S | re.I)
            if block:
                self.push(block.group(1))
                body, end = self.nodes(frozenset({"EXCEPTION", "END"}))
                caught: list[Node] | None = None
                if end == "EXCEPTION":
                    caught, end = self.nodes(frozenset({"END"}))
                if end != "END":
                    raise ScriptSyntaxError("BEGIN without END")
                out.append(Block(body, caught))
                continue
            if re.match(r"IF\b", text, re.I):
                then_at = _top_level_then(text)
                if then_at < 0:
                    raise ScriptSyntaxError(f"IF without THEN: {text[:80]}")
                self.push(text[then_at + 4 :])
                then, end = self.nodes(frozenset({"ELSE", "END IF"}))
                other: list[Node] = []
                if end == "ELSE":
                    other, end = self.nodes(frozenset({"END IF"}))
                if end != "END IF":
                    raise ScriptSyntaxError("IF without END IF")
                out.append(If(text[2:then_at].strip(), then, other))
                continue
            raised = re.match(r"RAISE(?:\s+USING\s+MESSAGE\s*=\s*(.*))?$", text, re.S | re.I)
            if raised:
                out.append(Raise(raised.group(1) or "'RAISE'"))
                continue
            if re.match(r"(DECLARE|SET|LOOP|WHILE|FOR|CALL|RETURN|BREAK|CONTINUE|EXECUTE)\b", text, re.I):
                raise ScriptSyntaxError(
                    f"the BigQuery double does not run {text.split()[0].upper()} statements"
                )
            out.append(Statement(text))
        if stops:
            raise ScriptSyntaxError(f"script ended before {' or '.join(sorted(stops))}")
        return out, ""


def parse_script(text: str) -> list[Node]:
    nodes, _ = _Parser(split_statements(text)).nodes(frozenset())
    return nodes


def is_script(nodes: list[Node]) -> bool:
    return len(nodes) != 1 or not isinstance(nodes[0], Statement)
