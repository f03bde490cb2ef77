"""Shell words as bash expands them, worked out without running anything.

The allow-list judges what a program is handed, and bash hands it the word after
expansion: ``cat {/etc/passwd,x}`` gives cat ``/etc/passwd``. bash expands a word in a
fixed order: braces, then tilde, parameters, arithmetic and substitutions, then word
splitting, file-name patterns and quote removal. Here:

- brace expansion is bash's own algorithm (``braces.c``: the same scan, the same
  quirks), run on the word as written, with a cap on how many words it may make (a
  sequence is counted before it is made, so ``{1..100000000}`` is refused at once);
- every construct whose result is not known here, or depends on shell state the gate
  cannot see, is refused: a tilde bash would expand, parameters other than this
  line's loop variables and ``$?``/``$#``, ANSI-C and locale quoting, arithmetic,
  substitutions, extended patterns (``@(...)``) and history designators (``!!``;
  agentd's shells never expand them: ``bash -c``, or ``eval`` of a variable);
- a loop variable takes each value its loop list expands to. Unquoted, it must stand
  alone with a value that no ``IFS`` and no pattern can turn into a path, so what is
  accepted does not depend on the ``IFS`` or the glob options a persistent shell has
  (an approved command may have changed them);
- a file-name pattern stays a pattern (a tuple of elements), and so does a loop value
  that stands for the names a pattern matched: the workspace's names are the agent's
  to choose, so the checks ask what a pattern *can* match (`can_be_dotdot`,
  `option_hazard`), under any glob option (``dotglob``, ``globskipdots`` off as in
  bash before 5.2, ``globstar``).
"""

from __future__ import annotations

import itertools
import re
import string
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

__all__ = ["ANY", "MAX_CHARS", "MAX_WORDS", "STAR", "Bracket", "Element", "Pattern",
           "Unsafe", "Word", "can_be_dotdot", "expand", "is_literal", "may_be_option",
           "may_start", "option_hazard", "render"]

#: Words one shell word may become (brace alternatives times loop values), and the
#: ``{`` one word may hold: both keep the work for a hostile line small.
MAX_WORDS = 512
_MAX_BRACES = 64
#: Characters the brace alternatives of one word may add up to (512 copies of a long
#: word would otherwise cost seconds to check).
MAX_CHARS = 65_536
#: Sequence ends beyond this are refused rather than modelled (bash switches to C
#: ``int`` for zero-padded terms and gives up on overflow).
_MAX_TERM = 2**31 - 1


class Unsafe(Exception):  # a control-flow signal carrying the reason
    """Why a word cannot be expanded here (the message)."""


@dataclass(frozen=True, slots=True)
class _Wild:
    """``*`` or ``?``: any run of characters, or any one."""

    text: str


STAR = _Wild("*")
ANY = _Wild("?")


@dataclass(frozen=True, slots=True)
class Bracket:
    """A bracket expression (``[a-z]``, ``[!.]``, ``[[:alpha:]]``).

    ``anything`` marks a form this module does not model (an equivalence class, a
    quoted member): it is taken to match every character.
    """

    text: str
    negated: bool = False
    chars: frozenset[str] = frozenset()
    ranges: tuple[tuple[str, str], ...] = ()
    classes: tuple[str, ...] = ()
    anything: bool = False

    def may_match(self, ch: str) -> bool:
        if self.anything:
            return True
        hit = ch in self.chars or any(_in_range(lo, hi, ch) for lo, hi in self.ranges) \
            or any(_in_class(c, ch) for c in self.classes)
        return hit != self.negated


Element = str | _Wild | Bracket  # a one-character string is that character, literal
Pattern = tuple[Element, ...]


@dataclass(frozen=True, slots=True)
class Word:
    """One word bash hands the program (one brace alternative).

    Attributes:
        variants: Every form it can take, one per combination of loop values. Each is
            a pattern: literal characters, and wildcards where a file name not known
            here goes (a glob bash expands, or a loop value that came from one).
        glob: Holds an unquoted ``*``, ``?`` or ``[``: bash matches it against names.
        param: Holds a parameter: its value changes from one iteration to the next.
        quoted: Every parameter in it is inside double quotes (no splitting).
    """

    variants: tuple[Pattern, ...]
    glob: bool = False
    param: bool = False
    quoted: bool = True

    @property
    def text(self) -> str:
        return render(self.variants[0])

    @property
    def dynamic(self) -> bool:
        """Its text is not one known string."""
        return self.param or not all(is_literal(v) for v in self.variants)


def render(pattern: Pattern) -> str:
    return "".join(e if isinstance(e, str) else e.text for e in pattern)


def is_literal(pattern: Pattern) -> bool:
    return all(isinstance(e, str) for e in pattern)


# --- brace expansion: bash's braces.c, on the word as written -----------------------


def _ws(ch: str) -> bool:
    return ch in ("", " ", "\t", "\n")


# complexity: a transcription of bash's brace_gobbler (subst.c): the branches are
# bash's, kept in its order so that it can be checked against the source.
def _gobble(text: str, i: int, satisfy: str) -> tuple[int, str]:
    """bash's ``brace_gobbler``: from ``i``, the index of the first ``satisfy`` that
    counts (unquoted, outside inner braces, in a valid expression), and that
    character ("" at the end)."""
    level = 0
    quoted = ""
    pass_next = False
    commas = 0 if satisfy == "}" else 1
    n = len(text)
    while i < n:
        c = text[i]
        nxt = text[i + 1:i + 2]
        if pass_next:
            pass_next = False
            i += 1
            continue
        if c == "\\" and quoted in ("", '"', "`"):
            pass_next = True
            i += 1
            continue
        if c == "$" and nxt == "{" and quoted != "'":
            pass_next = True
            i += 1
            if not quoted:
                level += 1
            continue
        if quoted:
            if c == quoted:
                quoted = ""
            if quoted == '"' and c == "$" and nxt == "(":
                raise Unsafe("a substitution inside a brace expression")
            i += 1
            continue
        if c in "\"'`":
            quoted = c
            i += 1
            continue
        if c in "$<>" and nxt == "(":
            raise Unsafe("a substitution inside a brace expression")
        if c == satisfy and level == 0 and commas > 0:
            # bash leaves a brace alone when it stands between blanks, or before "}".
            if c == "{" and (i == 0 or _ws(text[i - 1])) and (_ws(nxt) or nxt == "}"):
                i += 1
                continue
            return i, c
        if c == "{":
            level += 1
        elif c == "}" and level:
            level -= 1
        elif satisfy == "}" and level == 0 and (
                c == "," or (text[i:i + 2] == ".." and text[i + 2:i + 3] != "}")):
            commas += 1
        i += 1
    return i, ""


def _concat(left: list[str], right: list[str]) -> list[str]:
    if len(left) * len(right) > MAX_WORDS:
        raise Unsafe(f"a brace expression making more than {MAX_WORDS} words")
    size = sum(map(len, left)) * len(right) + sum(map(len, right)) * len(left)
    if size > MAX_CHARS:
        raise Unsafe(f"a brace expression making more than {MAX_CHARS} characters")
    return [a + b for a in left for b in right]


def _braces(text: str) -> list[str]:
    """bash's ``brace_expand``: every word ``text`` becomes, as written (quotes kept)."""
    i = 0
    while True:
        i, c = _gobble(text, i, "{")
        if not c:
            return [text]
        j, close = _gobble(text, i + 1, "}")
        if close:
            break
        i += 1
    preamble = text[:i]
    start = i + 1
    i, _ = _gobble(text, start, "}")
    amble = text[start:i]
    j = 0
    while j < len(amble) and amble[j] != ",":
        j += 2 if amble[j] == "\\" else 1  # this scan minds backslashes, not quotes
    if j >= len(amble):
        tack = _sequence(amble)
        if tack is None:
            if not text[i + 1:]:
                return [text]
            tack = [text[start - 1:i + 1]]  # an invalid sequence stays as written
    else:
        tack = _amble(amble)
    result = _concat([preamble], tack)
    if text[i + 1:]:
        result = _concat(result, _braces(text[i + 1:]))
    return result


def _amble(text: str) -> list[str]:
    out: list[str] = []
    start = i = 0
    while True:
        i, c = _gobble(text, i, ",")
        out += _braces(text[start:i])
        if len(out) > MAX_WORDS:
            raise Unsafe(f"a brace expression making more than {MAX_WORDS} words")
        if not c:
            return out
        i += 1
        start = i


# complexity: a transcription of bash's expand_seqterm (braces.c): the branches are
# bash's, kept in its order so that it can be checked against the source.
def _sequence(amble: str) -> list[str] | None:
    """bash's ``expand_seqterm``: ``{x..y[..incr]}``, or None when it is not one."""
    t = amble.find("..")
    if t < 0:
        return None
    lhs, rhs = amble[:t], amble[t + 2:]
    if not lhs or not rhs:
        return None
    lhs_int = re.fullmatch(r"[+-]?[0-9]+", lhs) is not None
    lhs_char = len(lhs) == 1 and lhs.isascii() and lhs.isalpha()
    if rhs[0].isdigit() or (rhs[0] in "+-" and rhs[1:2].isdigit()):
        m = re.match(r"[+-]?[0-9]+", rhs)
        assert m is not None
        end_text, rest, rhs_int = m.group(0), rhs[m.end():], True
        if rest and rest[0] != ".":
            return None
    elif rhs[0].isascii() and rhs[0].isalpha() and rhs[1:2] in ("", "."):
        end_text, rest, rhs_int = rhs[0], rhs[1:], False
    else:
        return None
    incr = 1
    if rest:
        m = re.fullmatch(r"\.\.([+-]?[0-9]+)", rest)
        if m is None:
            return None
        incr = _term(m.group(1))
    if (lhs_int, lhs_char) != (rhs_int, not rhs_int) or not (lhs_int or lhs_char):
        return None
    if lhs_char:
        if not ((lhs.islower() and end_text.islower())
                or (lhs.isupper() and end_text.isupper())):
            # Between cases the sequence runs through [ \ ] ^ _ ` (a backquote!).
            raise Unsafe(f"the brace sequence {{{amble}}} (letters of both cases)")
        return [chr(n) for n in _steps(ord(lhs), ord(end_text), incr)]
    first, last = _term(lhs), _term(end_text)
    width = 0
    for side in (lhs, end_text):  # bash pads when either end is written with a 0
        if (len(side) > 1 and side[0] == "0") or (len(side) > 2 and side[:2] == "-0"):
            width = max(width, len(lhs), len(end_text))
    return [f"{n:0{width}d}" if width else str(n) for n in _steps(first, last, incr)]


def _term(text: str) -> int:
    value = int(text)
    if abs(value) > _MAX_TERM:
        raise Unsafe(f"a brace sequence term too large to check ({text})")
    return value


def _steps(first: int, last: int, incr: int) -> range:
    """bash's ``mkseq``: the step's sign follows the direction; 0 counts as 1."""
    step = abs(incr) or 1
    count = abs(last - first) // step + 1
    if count > MAX_WORDS:
        raise Unsafe(f"a brace sequence of {count} words (more than {MAX_WORDS})")
    return range(first, last + 1, step) if first <= last else range(first, last - 1, -step)


# --- everything after braces ---------------------------------------------------------

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: A value an unquoted ``$f`` may hold, standing alone as a word: neither file-name
#: patterns nor word splitting (whatever ``IFS`` an approved command set in a
#: persistent shell) can make a path of it: no pattern characters, no ``/``, no
#: ``..`` (split at ``x``, ``..x`` next to a value ``x`` would be ``..``).
_INERT = re.compile(r"(?!.*\.\.)[A-Za-z0-9_.,:=%+@-]+")
#: The special parameters whose value is a number: ``$?`` and ``$#``.
_NUMERIC = {"?": "0", "#": "0"}


@dataclass(slots=True)
class _Param:
    name: str
    quoted: bool


@dataclass(slots=True)
class _Cells:
    cells: list[tuple[str, bool] | _Param] = field(default_factory=list)
    had_quotes: bool = False


def _cells(raw: str) -> _Cells:
    """Quote removal with the quoting kept: (character, quoted) cells and parameters,
    refusing what this module does not expand."""
    out = _Cells()
    cells = out.cells
    i, n, quote = 0, len(raw), ""
    while i < n:
        c = raw[i]
        nxt = raw[i + 1:i + 2]
        if quote == "'":
            if c == "'":
                quote = ""
            else:
                cells.append((c, True))
            i += 1
            continue
        if c == "\\":
            if quote == '"' and nxt not in ("$", "`", '"', "\\"):
                cells.append(("\\", True))
                i += 1
            elif not nxt:
                raise Unsafe("a backslash at the end of a word")
            else:
                cells.append((nxt, True))
                i += 2
            continue
        if c == "$":
            i = _dollar(raw, i, quote == '"', cells)
            continue
        if c == "`":
            raise Unsafe("command substitution (backticks)")
        if c == "!" and nxt not in ("", "=", '"', " ", "\t", "\n"):
            # bash never expands history here (bash -c, or eval of a variable in the
            # persistent shell), but an interactive shell would: not relied upon.
            raise Unsafe(f"a history designator ({raw[i:i + 2]})")
        if quote == '"':
            if c == '"':
                quote = ""
            else:
                cells.append((c, True))
            i += 1
            continue
        if c in "'\"":
            quote = c
            out.had_quotes = True
        elif c in "()":
            raise Unsafe("an extended pattern or a parenthesis inside a word")
        elif c == "~" and (not cells or cells[-1] in (("=", False), (":", False))):
            # ~user, ~+, ~-, and after = or : in a word bash takes for an assignment.
            raise Unsafe("a ~ that bash expands to a home or working directory")
        else:
            cells.append((c, False))
        i += 1
    if quote:
        raise Unsafe("an unterminated quote")
    return out


def _dollar(raw: str, i: int, in_double: bool, cells: list[tuple[str, bool] | _Param]
            ) -> int:
    nxt = raw[i + 1:i + 2]
    if nxt == "{":
        m = re.match(r"\{([A-Za-z_][A-Za-z0-9_]*|[?#])\}", raw[i + 1:])
        if m is None:
            raise Unsafe("a ${...} expansion with operators")
        cells.append(_Param(m.group(1), in_double))
        return i + 1 + m.end()
    m = _NAME.match(raw, i + 1)
    if m is not None:
        cells.append(_Param(m.group(0), in_double))
        return m.end()
    if nxt in _NUMERIC:
        cells.append(_Param(nxt, in_double))
        return i + 2
    if nxt and nxt in "@*-$!0123456789([{'\"":
        raise Unsafe(f"the expansion ${nxt} (its value is not known here)")
    cells.append(("$", in_double))  # a lone $ is itself
    return i + 1


def expand(raw: str, loop: Mapping[str, Sequence[Pattern]]) -> list[Word]:
    """The words bash makes of ``raw`` (a word as written), each with every form its
    loop variables give it.

    Args:
        raw: The word, quotes and all.
        loop: This line's loop variables in scope, and the values each can hold.

    Raises:
        Unsafe: The word holds an expansion this module does not work out, or
            would become too many words.
    """
    if raw.count("{") > _MAX_BRACES:
        raise Unsafe(f"a word with more than {_MAX_BRACES} braces")
    words: list[Word] = []
    for alternative in _braces(raw):
        parsed = _cells(alternative)
        params = [c for c in parsed.cells if isinstance(c, _Param)]
        choices: list[Sequence[Pattern]] = []
        for p in params:
            if p.name in _NUMERIC:
                choices.append(((_NUMERIC[p.name],),))
            elif p.name in loop:
                choices.append(loop[p.name])
            else:
                raise Unsafe(f"the expansion ${p.name} (only this line's loop "
                             "variables are known)")
        variants: list[Pattern] = []
        glob = False
        for combo in _product(choices):
            pattern, has_glob = _assemble(parsed.cells, iter(combo))
            glob = glob or has_glob
            variants.append(pattern)
        if (not parsed.had_quotes and not params and not variants[0]):
            continue  # an empty word from braces ({,}) is dropped, as bash does
        words.append(Word(variants=tuple(variants), glob=glob, param=bool(params),
                          quoted=all(p.quoted for p in params)))
        if len(words) > MAX_WORDS:
            raise Unsafe(f"a word making more than {MAX_WORDS} words")
    return words


def _product(choices: list[Sequence[Pattern]]) -> Iterator[tuple[Pattern, ...]]:
    total = 1
    for values in choices:
        total *= max(len(values), 1)
        if total > MAX_WORDS:
            raise Unsafe(f"loop variables giving more than {MAX_WORDS} forms of a word")
    return itertools.product(*choices)


def _assemble(cells: list[tuple[str, bool] | _Param], values: Iterator[Pattern]
              ) -> tuple[Pattern, bool]:
    """One form of a word: its cells with these loop values, as a pattern."""
    flat: list[tuple[str, bool] | Element] = []
    for cell in cells:
        if not isinstance(cell, _Param):
            flat.append(cell)
            continue
        value = next(values)
        if cell.quoted:
            flat.extend((e, True) if isinstance(e, str) else e for e in value)
        elif len(cells) > 1 or not is_literal(value) or (
                value and not _INERT.fullmatch(render(value))):
            raise Unsafe(f"the unquoted ${cell.name} can hold {render(value)!r}, which "
                         "word splitting or file-name patterns could change (quote it)")
        else:
            flat.extend((e, True) for e in value if isinstance(e, str))
    return _elements(flat)


def _elements(flat: list[tuple[str, bool] | Element]) -> tuple[Pattern, bool]:
    out: list[Element] = []
    glob = False
    i = 0
    while i < len(flat):
        cell = flat[i]
        if not isinstance(cell, tuple):
            out.append(cell)  # a wildcard standing for a file name a loop value holds
        elif cell[1] or cell[0] not in "*?[":
            out.append(cell[0])
        elif cell[0] == "[":
            bracket, i = _bracket(flat, i)
            out.append(bracket)
            glob = True
            continue
        else:
            out.append(STAR if cell[0] == "*" else ANY)
            glob = True
        i += 1
    return tuple(out), glob


def _bracket(flat: list[tuple[str, bool] | Element], i: int) -> tuple[Bracket, int]:
    """The bracket expression at ``flat[i]`` and the index after it. Without a closing
    ``]`` bash matches ``[`` as itself; taken here as any character (a superset)."""
    j = i + 1
    text = "["
    negated = False
    first = flat[j] if j < len(flat) else None
    if first in (("!", False), ("^", False)):
        negated, j, text = True, j + 1, text + "!"
    body: list[tuple[str, bool] | Element] = []
    while j < len(flat):
        cell = flat[j]
        if cell == ("]", False) and body:
            break
        span = 1
        kind = flat[j + 1] if j + 1 < len(flat) else None
        if cell == ("[", False) and kind in ((":", False), ("=", False), (".", False)):
            # [:alpha:], [=a=], [.a.] hold their own "]": bash skips to their end.
            assert isinstance(kind, tuple)
            for k in range(j + 2, len(flat) - 1):
                if flat[k] == (kind[0], False) and flat[k + 1] == ("]", False):
                    span = k + 2 - j
                    break
        for part in flat[j:j + span]:
            body.append(part)
            text += part[0] if isinstance(part, tuple) else render((part,))
        j += span
    else:
        return Bracket("[", anything=True), i + 1
    text += "]"
    if any(c == "/" or (isinstance(c, tuple) and c[0] == "/") for c in body):
        # A slash never matches inside brackets; refused rather than relied upon.
        raise Unsafe(f"a / inside the bracket expression {text}")
    if any(not isinstance(c, tuple) or c[1] for c in body):
        return Bracket(text, anything=True), j + 1
    chars = "".join(c[0] for c in body if isinstance(c, tuple))
    return _parse_bracket(text, negated, chars), j + 1


def _parse_bracket(text: str, negated: bool, chars: str) -> Bracket:
    members: set[str] = set()
    ranges: list[tuple[str, str]] = []
    classes: list[str] = []
    k = 0
    while k < len(chars):
        if chars.startswith("[:", k):
            end = chars.find(":]", k + 2)
            if end < 0:
                return Bracket(text, anything=True)
            classes.append(chars[k + 2:end])
            k = end + 2
        elif chars.startswith(("[=", "[."), k):
            return Bracket(text, anything=True)  # equivalence class, collating symbol
        elif k + 2 < len(chars) and chars[k + 1] == "-":
            ranges.append((chars[k], chars[k + 2]))
            k += 3
        else:
            members.add(chars[k])
            k += 1
    return Bracket(text, negated=negated, chars=frozenset(members), ranges=tuple(ranges),
                   classes=tuple(classes))


def _in_range(lo: str, hi: str, ch: str) -> bool:
    for kind in (str.isdigit, str.islower, str.isupper):
        if lo.isascii() and hi.isascii() and kind(lo) and kind(hi):
            # Whatever the locale's collation, such a range holds letters or digits.
            return ch.isalnum()
    return True  # a range over punctuation or across kinds: taken to hold anything


_CLASSES: dict[str, Callable[[str], bool]] = {
    "alpha": str.isalpha, "digit": str.isdigit, "alnum": str.isalnum, "upper": str.isupper,
    "lower": str.islower, "space": str.isspace, "blank": lambda c: c in " \t",
    "cntrl": lambda c: ord(c) < 32, "xdigit": lambda c: c in string.hexdigits}


def _in_class(name: str, ch: str) -> bool:
    test = _CLASSES.get(name)
    return True if test is None else test(ch)


# --- what a pattern can match ---------------------------------------------------------


def _components(pattern: Pattern) -> list[Pattern]:
    parts: list[list[Element]] = [[]]
    for e in pattern:
        if e == "/":
            parts.append([])
        else:
            parts[-1].append(e)
    return [tuple(p) for p in parts]


def _match(elems: Pattern, text: str) -> bool:
    """Whether ``elems`` matches all of ``text`` (no leading-dot rule)."""
    # ends[k]: the pattern so far can end just before text[k] (a walk, not recursion:
    # a hostile pattern may hold thousands of elements).
    ends = [True] + [False] * len(text)
    for e in elems:
        if e is STAR:
            for k in range(1, len(ends)):
                ends[k] = ends[k] or ends[k - 1]
            continue
        ends = [False] + [ends[k] and (e is ANY or e == text[k] or (
            isinstance(e, Bracket) and e.may_match(text[k]))) for k in range(len(text))]
    return ends[-1]


def can_be_dotdot(pattern: Pattern) -> bool:
    """Whether a component of the pattern with a wildcard can match ``..``.

    bash matches ``.`` and ``..`` only by a component that starts with a literal
    ``.`` (``.*``, ``.?``, ``.[.]``; ``.*`` does in bash before 5.2), whatever
    ``dotglob`` says; a leading bracket is taken to be able to as well.
    """
    for comp in _components(pattern):
        if is_literal(comp) or not comp:
            continue
        if (comp[0] == "." or isinstance(comp[0], Bracket)) and _match(comp, ".."):
            return True
    return False


def may_start(pattern: Pattern, ch: str) -> bool:
    """Whether a name the pattern matches can start with ``ch``."""
    return _may_start(_components(pattern)[0], ch)


def may_be_option(pattern: Pattern, *, glued: bool) -> bool:
    """Whether the pattern can match an option: a first component starting with
    ``-``, and (unless the option may carry a glued value, ``--files0-from=x``) made
    only of letters, digits and dashes, as an option cluster is."""
    comps = _components(pattern)
    if not _may_start(comps[0], "-"):
        return False
    if glued:
        return True
    alphabet = string.ascii_letters + string.digits + "-"
    return len(comps) == 1 and all(
        e in alphabet if isinstance(e, str)
        else not isinstance(e, Bracket) or any(e.may_match(c) for c in alphabet)
        for e in comps[0])


def _may_start(comp: Pattern, ch: str) -> bool:
    if not comp:
        return False
    head = comp[0]
    if isinstance(head, str):
        return head == ch
    return head is STAR or head is ANY or (isinstance(head, Bracket) and head.may_match(ch))


def _may_end(comp: Pattern, suffix: str) -> bool:
    k = len(comp)
    for ch in reversed(suffix):
        k -= 1
        if k < 0:
            return False
        e = comp[k]
        if e is STAR:
            return True
        if not (e is ANY or e == ch or (isinstance(e, Bracket) and e.may_match(ch))):
            return False
    return True


def option_hazard(pattern: Pattern) -> bool:
    """Whether the names a pattern stands for can make an option that carries a path
    out of the workspace: a first component that can start with ``-`` and is not
    known (a directory ``-f`` makes ``*/etc/passwd`` read ``-f/etc/passwd``, that is
    ``/etc/passwd``; a file ``--from-file=..`` makes ``*`` compare with ``..``)."""
    comps = _components(pattern)
    first = comps[0]
    if is_literal(first) or not _may_start(first, "-"):
        return False
    return len(comps) > 1 or _may_end(first, "..")
