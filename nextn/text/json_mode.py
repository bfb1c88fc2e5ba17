"""Constrained JSON output (`response_format` json_object and json_schema): the reply is one JSON text.

`JsonPrefix` is a byte-level pushdown automaton over the grammar `json_schema.compile_schema` builds (by
default any RFC 8259 object): it accepts exactly the byte strings that can still grow into a matching
text. `JsonConstraint` applies it to the decisions `sampling.target` makes: a greedy row becomes the
likeliest token that keeps the reply a valid prefix, a distribution row loses the tokens that would break
it (and is renormalised), so the output is the model's own distribution conditioned on matching. Speculation
stays exact: drafts are checked against these constrained targets like any other. Whitespace between tokens
is one space, or a newline and at most MAX_WS spaces or tabs (a model may otherwise pad forever), none
before the text or after it; the end-of-text token is allowed only once the text is complete, and nothing
else after it.
"""

from __future__ import annotations

import torch

from .json_schema import AnyOf, Arr, Lit, Num, Obj, Str, compile_schema

WS = b" \t\n\r"
DIGITS = b"0123456789"
HEX = b"0123456789abcdefABCDEF"
MAX_WS = 20           # longest indentation after a newline between tokens
QUOTE, BACKSLASH = ord('"'), ord("\\")
# number sub-states: after '-', after a leading 0, in integer digits, after '.', in fraction, after e, after e+/-,
# in exponent; a number may end in the ones of N_END_OK
N_SIGN, N_ZERO, N_INT, N_DOT, N_FRAC, N_E, N_ESIGN, N_EXP = range(8)
N_END_OK = (N_ZERO, N_INT, N_FRAC, N_EXP)
OBJECT = {"type": "object"}


class JsonPrefix:
    """Accepts exactly the byte strings that can still grow into one JSON text matching a schema (by default
    any object, RFC 8259).

    The state is a set of alternatives (anyOf and enum keep several alive), each the whitespace just read
    (0: none, -1: no more allowed, k > 0: a newline and k - 1 bytes of indentation) and a stack of frames, an immutable linked list (frame, rest): ('V', node) a value is due,
    ('L', bytes) the rest of a literal, ('S', node, chars, esc) inside a string, ('N', node, sub, text) inside
    a number, ('O', node, seen keys, phase) an object (0: after '{', 1: after ',', 2: after a value),
    ('K', node, seen, key bytes, esc) inside a key, ('C', node) a colon then this value, ('A', node, count,
    phase) an array (0: after '[', 2: after an item). No whitespace before the text or after it."""

    __slots__ = ("alts",)

    def __init__(self, schema=OBJECT, node=None):
        node = node if node is not None else compile_schema(schema)
        self.alts = {(-1, (("V", node), None))}          # no whitespace before the text

    def copy(self) -> "JsonPrefix":
        c = JsonPrefix.__new__(JsonPrefix)
        c.alts = self.alts                               # never changed in place
        return c

    @property
    def done(self) -> bool:
        """The text is complete (a number at the very end could still grow, but may stop here)."""
        return any(stack is None or stack[1] is None and stack[0][0] == "N" and _number_ends(stack[0])
                   for _, stack in self.alts)

    def feed(self, data: bytes) -> bool:
        """Advance over data; False (the state is then spoilt) as soon as it cannot be part of a valid text."""
        for b in data:
            out = set()
            for ws, stack in self.alts:
                if stack is not None:
                    _step(ws, stack, b, out)
            self.alts = out
            if not out:
                return False
        return True


def _step(ws: int, stack, b: int, out: set) -> None:
    frame, rest = stack
    kind = frame[0]
    if kind == "S":
        _string(frame, rest, b, out)
    elif kind == "K":
        _key(frame, rest, b, out)
    elif kind == "L":
        if b == frame[1][0]:
            out.add((0, (("L", frame[1][1:]), rest) if len(frame[1]) > 1 else rest))
    elif kind == "N":
        _number(frame, rest, b, out)
    elif b in WS:                                        # between tokens: one space, or a newline and indentation
        if ws == 0 and b in b" \n":
            out.add((-1 if b == ord(" ") else 1, stack))
        elif 0 < ws <= MAX_WS and b in b" \t":
            out.add((ws + 1, stack))
    elif kind == "V":
        _start(frame[1], b, rest, out)
    elif kind == "C":
        if b == ord(":"):
            out.add((0, (("V", frame[1]), rest)))
    elif kind == "O":
        _object(frame, rest, b, out)
    else:
        _array(frame, rest, b, out)


def _start(node, b: int, rest, out: set) -> None:
    """The first byte of a value of `node`."""
    if isinstance(node, AnyOf):
        for option in node.options:
            _start(option, b, rest, out)
    elif isinstance(node, Lit):
        if b == node.text[0]:
            out.add((0, (("L", node.text[1:]), rest) if len(node.text) > 1 else rest))
    elif isinstance(node, Str):
        if b == QUOTE:
            out.add((0, (("S", node, 0, 0), rest)))
    elif isinstance(node, Num):
        if b == ord("-") or b in DIGITS:
            sub = N_SIGN if b == ord("-") else N_ZERO if b == ord("0") else N_INT
            if _reachable(node, bytes([b])):
                out.add((0, (("N", node, sub, bytes([b])), rest)))
    elif isinstance(node, Obj):
        if b == ord("{"):
            out.add((0, (("O", node, frozenset(), 0), rest)))
    elif b == ord("["):
        out.add((0, (("A", node, 0, 0), rest)))


def _string(frame, rest, b: int, out: set) -> None:
    _, node, chars, esc = frame
    if esc == -1:                                        # after a backslash
        if b == ord("u"):
            out.add((0, (("S", node, chars, 4), rest)))
        elif b in b'"\\/bfnrt':
            out.add((0, (("S", node, chars + 1, 0), rest)))
    elif esc:                                            # hex digits of \uXXXX still due
        if b in HEX:
            out.add((0, (("S", node, chars + (esc == 1), esc - 1), rest)))
    elif b == QUOTE:
        if chars >= node.min_len:
            out.add((0, rest))
    elif b >= 0x20:                                      # an escape counts as one character once complete;
        more = not 0x80 <= b < 0xC0                      # a UTF-8 continuation byte adds none
        if not more or node.max_len is None or chars < node.max_len:
            out.add((0, (("S", node, chars, -1), rest) if b == BACKSLASH else (("S", node, chars + more, 0), rest)))


def _object(frame, rest, b: int, out: set) -> None:
    _, node, seen, phase = frame
    more = node.extra is not None or any(k not in seen for k in node.props)     # a further key may come
    if b == QUOTE and phase < 2 and more:
        out.add((0, (("K", node, seen, b"", 0), (frame, rest))))
    elif b == ord("}") and phase != 1 and node.required <= seen:
        out.add((0, rest))
    elif b == ord(",") and phase == 2 and more:
        out.add((0, (("O", node, seen, 1), rest)))


def _key(frame, rest, b: int, out: set) -> None:
    _, node, seen, key, esc = frame
    if b == QUOTE and not esc:
        value = node.props.get(key, node.extra)
        if value is not None and key not in seen:        # rest's top is the object this key belongs to
            out.add((0, (("C", value), (("O", node, seen | {key}, 2), rest[1]))))
        return
    key += bytes([b])
    if node.extra is None:                               # only the declared keys not yet written
        if any(k.startswith(key) and k not in seen for k in node.props):
            out.add((0, (("K", node, seen, key, 0), rest)))
        return
    if esc == -1:
        ok, esc = b in b'"\\/bfnrtu', 4 if b == ord("u") else 0
    elif esc:
        ok, esc = b in HEX, esc - 1
    else:
        ok, esc = b >= 0x20, -1 if b == BACKSLASH else 0
    if ok:
        out.add((0, (("K", node, seen, key, esc), rest)))


def _array(frame, rest, b: int, out: set) -> None:
    _, node, count, phase = frame
    if b == ord("]"):
        if count >= node.min_items:
            out.add((0, rest))
    elif b == ord(",") and phase == 2:
        if node.item(count) is not None and (node.max_items is None or count < node.max_items):
            out.add((0, (("V", node.item(count)), (("A", node, count + 1, 2), rest))))
    elif phase == 0 and node.item(0) is not None and node.max_items != 0:
        _start(node.item(0), b, (("A", node, 1, 2), rest), out)


def _number(frame, rest, b: int, out: set) -> None:
    _, node, sub, text = frame
    nxt = _number_sub(sub, b, node.integer)
    if nxt is not None:
        if _reachable(node, text + bytes([b])):
            out.add((0, (("N", node, nxt, text + bytes([b])), rest)))
    elif _number_ends(frame) and rest is not None:       # the number ended; b belongs to what follows
        _step(0, rest, b, out)


def _number_sub(n: int, b: int, integer: bool):
    """The sub-state after b, or None when b cannot continue the number."""
    digit = b in DIGITS
    if n == N_SIGN and digit:
        return N_ZERO if b == ord("0") else N_INT
    if n in (N_INT, N_FRAC, N_EXP) and digit:
        return n
    if integer:
        return None
    if n in (N_ZERO, N_INT) and b == ord("."):
        return N_DOT
    if n in (N_ZERO, N_INT, N_FRAC) and b in b"eE":
        return N_E
    if n == N_DOT and digit:
        return N_FRAC
    if n == N_E and b in b"+-":
        return N_ESIGN
    if n in (N_E, N_ESIGN) and digit:
        return N_EXP
    return None


def _number_ends(frame) -> bool:
    _, node, sub, text = frame
    if sub not in N_END_OK:
        return False
    return node.lo is None and node.hi is None or \
        (node.lo is None or int(text) >= node.lo) and (node.hi is None or int(text) <= node.hi)


def _reachable(node: Num, text: bytes) -> bool:
    """Some integer in [lo, hi] is written with this prefix (always, for unbounded numbers)."""
    lo, hi = node.lo, node.hi
    if lo is None and hi is None:
        return True
    negative, digits = text.startswith(b"-"), text.lstrip(b"-")
    if not digits:                                       # '-': any negative integer will do
        return lo is None or lo <= min(-1, hi if hi is not None else -1)
    if digits[:1] == b"0":                               # nothing follows a leading zero
        return (lo is None or lo <= 0) and (hi is None or hi >= 0)
    if (hi if not negative else lo) is None:             # unbounded on the side the number grows to
        return True
    p, width = int(digits), 1
    while p * width <= max(abs(lo or 0), abs(hi or 0)):
        first, last = p * width, p * width + width - 1    # the integers whose digits start with `digits`
        if negative:
            first, last = -last, -first
        if (lo is None or last >= lo) and (hi is None or first <= hi):
            return True
        width *= 10
    return False


class JsonConstraint:
    """Per sequence: the automaton after its generated tokens, and the constrained targets of its rows."""

    def __init__(self, token_bytes, eog_ids, n_prompt: int, schema=OBJECT):
        self.token_bytes, self.eog = token_bytes, set(eog_ids)
        self.state, self.fed = JsonPrefix(schema), n_prompt      # tokens[n_prompt:fed] are in `state`
        self._bytes: dict[int, bytes] = {}

    def _tok(self, t: int) -> bytes:
        b = self._bytes.get(t)
        if b is None:
            b = self._bytes[t] = self.token_bytes(t)
        return b

    def _after(self, tokens: list[int], extra: list[int]) -> JsonPrefix | None:
        """The state after every generated token so far plus `extra` (None: they already broke it)."""
        while self.fed < len(tokens):
            if not self.state.feed(self._tok(tokens[self.fed])):
                self.state = None
                break
            self.fed += 1
        if self.state is None:
            return None
        st = self.state.copy()
        return st if st.feed(b"".join(self._tok(t) for t in extra)) else None

    def ok(self, state: JsonPrefix | None, t: int) -> bool:
        if state is None:
            return False
        if t in self.eog:
            return state.done
        return state.copy().feed(self._tok(t))

    def constrain(self, rows: torch.Tensor, logits: torch.Tensor, tokens: list[int], drafts: list[int] = ()):
        """rows as `target` gives them (argmax ids [n] or distributions [n, V]) for a sequence with `tokens`
        so far whose row j follows drafts[:j]; logits [n, V] for the greedy search. Returns rows whose
        decisions keep the reply valid JSON."""
        out = rows.clone()
        for j in range(rows.shape[0]):
            state = self._after(tokens, list(drafts[:j]))
            if rows.dim() == 1:
                if not self.ok(state, int(rows[j])):
                    out[j] = self._best(state, logits[j])
                continue
            support = rows[j].nonzero().flatten().tolist()
            keep = [t for t in support if self.ok(state, t)]
            if len(keep) != len(support):
                out[j].zero_()
                if keep:
                    out[j, keep] = rows[j, keep]
                else:                                   # nothing the sampler allows is valid: the likeliest valid
                    out[j, self._best(state, logits[j])] = 1.0
        return out

    def _best(self, state, row: torch.Tensor) -> int:
        order = row.float().argsort(descending=True).tolist()
        for t in order:
            if self.ok(state, t):
                return t
        return order[0]
