"""JSON mode (`response_format: {"type": "json_object"}`): the reply is one JSON object, nothing else.

`JsonPrefix` is a byte-level pushdown automaton for RFC 8259 text whose top level is an object: it
accepts exactly the byte strings that can still grow into such a text. `JsonConstraint` applies it to
the decisions `sampling.target` makes: a greedy row becomes the likeliest token that keeps the reply a
valid prefix, a distribution row loses the tokens that would break it (and is renormalised), so the
output is the model's own distribution conditioned on being valid JSON. Speculation stays exact: drafts
are checked against these constrained targets like any other. The reply starts with '{'; whitespace
between tokens comes in runs of at most MAX_WS bytes; the end-of-text token is allowed only once the
object is closed, and nothing else after it.
"""

from __future__ import annotations

import torch

WS = b" \t\n\r"
DIGITS = b"0123456789"
HEX = b"0123456789abcdefABCDEF"
LITERALS = {ord("t"): b"rue", ord("f"): b"alse", ord("n"): b"ull"}
MAX_WS = 16           # longest run of whitespace between tokens (room for a newline and indentation)
OPEN_OBJ, OPEN_ARR = ord("{"), ord("[")
# modes
(START, VALUE, ARRAY_START, KEY_OR_CLOSE, KEY, COLON, AFTER, STRING, ESCAPE, UNICODE, LITERAL, NUMBER,
 DONE) = range(13)
# number sub-states: after '-', after a leading 0, in integer digits, after '.', in fraction, after e, after e+/-,
# in exponent; a number may end in the ones of N_END_OK
N_SIGN, N_ZERO, N_INT, N_DOT, N_FRAC, N_E, N_ESIGN, N_EXP = range(8)
N_END_OK = (N_ZERO, N_INT, N_FRAC, N_EXP)


class JsonPrefix:
    """Accepts exactly the byte strings that can still grow into one JSON object (RFC 8259)."""

    __slots__ = ("stack", "mode", "key", "rest", "num", "hexleft", "ws")

    def __init__(self):
        self.stack: list[int] = []        # OPEN_OBJ / OPEN_ARR of each open container
        self.mode, self.key, self.rest, self.num, self.hexleft, self.ws = START, False, b"", 0, 0, 0

    def copy(self) -> "JsonPrefix":
        c = JsonPrefix.__new__(JsonPrefix)
        c.stack, c.mode, c.key, c.rest, c.num, c.hexleft, c.ws = list(self.stack), self.mode, self.key, self.rest, \
            self.num, self.hexleft, self.ws
        return c

    @property
    def done(self) -> bool:
        """The object is complete (a number at the very end is complete too only once something follows it:
        a top-level object always ends in '}', so DONE is exact)."""
        return self.mode == DONE

    def feed(self, data: bytes) -> bool:
        """Advance over data; False (the state is then spoilt) as soon as it cannot be part of a valid text."""
        return all(self._byte(b) for b in data)

    def _close_value(self) -> None:
        self.mode = AFTER if self.stack else DONE

    def _byte(self, b: int) -> bool:
        m = self.mode
        if m == STRING:
            if b == 0x22:
                if self.key:
                    self.mode, self.key = COLON, False
                else:
                    self._close_value()
            elif b == 0x5C:
                self.mode = ESCAPE
            return b >= 0x20
        if m == ESCAPE:
            if b == ord("u"):
                self.mode, self.hexleft = UNICODE, 4
                return True
            self.mode = STRING
            return b in b'"\\/bfnrt'
        if m == UNICODE:
            self.hexleft -= 1
            if not self.hexleft:
                self.mode = STRING
            return b in HEX
        if m == LITERAL:
            if b != self.rest[0]:
                return False
            self.rest = self.rest[1:]
            if not self.rest:
                self._close_value()
            return True
        if m == NUMBER:
            if self._number(b):
                return True
            if self.num not in N_END_OK:
                return False
            self._close_value()                         # the number ended; b belongs to what follows
            return self._byte(b)
        if b in WS:          # between tokens, in runs of at most MAX_WS (a model may otherwise pad forever);
            self.ws += 1     # none before the object or after it
            return m not in (START, DONE) and self.ws <= MAX_WS
        self.ws = 0
        if m == START:                                  # the reply is an object
            if b != OPEN_OBJ:
                return False
            self.stack.append(b)
            self.mode = KEY_OR_CLOSE
            return True
        if m in (KEY_OR_CLOSE, KEY):
            if b == 0x22:
                self.mode, self.key = STRING, True
                return True
            return m == KEY_OR_CLOSE and b == ord("}") and self._pop()
        if m == COLON:
            self.mode = VALUE
            return b == ord(":")
        if m == AFTER:
            top = self.stack[-1]
            if b == ord(","):
                self.mode = KEY if top == OPEN_OBJ else VALUE
                return True
            return (b == ord("}") and top == OPEN_OBJ or b == ord("]") and top == OPEN_ARR) and self._pop()
        if m == ARRAY_START and b == ord("]"):
            return self._pop()
        return m in (VALUE, ARRAY_START) and self._value(b)

    def _pop(self) -> bool:
        self.stack.pop()
        self._close_value()
        return True

    def _value(self, b: int) -> bool:
        if b in (OPEN_OBJ, OPEN_ARR):
            self.stack.append(b)
            self.mode = KEY_OR_CLOSE if b == OPEN_OBJ else ARRAY_START
        elif b == 0x22:
            self.mode, self.key = STRING, False
        elif b in LITERALS:
            self.mode, self.rest = LITERAL, LITERALS[b]
        elif b == ord("-") or b in DIGITS:
            self.mode, self.num = NUMBER, N_SIGN if b == ord("-") else N_ZERO if b == ord("0") else N_INT
        else:
            return False
        return True

    def _number(self, b: int) -> bool:
        n, digit = self.num, b in DIGITS
        if n == N_SIGN and digit:
            self.num = N_ZERO if b == ord("0") else N_INT
        elif n in (N_INT, N_FRAC, N_EXP) and digit:
            pass
        elif n in (N_ZERO, N_INT) and b == ord("."):
            self.num = N_DOT
        elif n in (N_ZERO, N_INT, N_FRAC) and b in b"eE":
            self.num = N_E
        elif n == N_DOT and digit:
            self.num = N_FRAC
        elif n == N_E and b in b"+-":
            self.num = N_ESIGN
        elif n in (N_E, N_ESIGN) and digit:
            self.num = N_EXP
        else:
            return False
        return True


class JsonConstraint:
    """Per sequence: the automaton after its generated tokens, and the constrained targets of its rows."""

    def __init__(self, token_bytes, eog_ids, n_prompt: int):
        self.token_bytes, self.eog = token_bytes, set(eog_ids)
        self.state, self.fed = JsonPrefix(), n_prompt      # tokens[n_prompt:fed] are in `state`
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
