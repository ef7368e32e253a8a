"""Hypothesis strategies that damage files the way a bad disk, a bad edit or an attacker would.

    json_mutation(document)     valid JSON, wrong: values replaced by values of other types and
                                hostile numbers (-1, 2**63, 1e308, NaN, path strings), keys deleted
    byte_mutation(data)         bytes flipped, inserted or cut, the file truncated, or random bytes
    line_mutation(text)         a line-based file (a tokenizer) with a field replaced by a hostile
                                token, a line deleted, repeated or inserted
"""
import copy

from hypothesis import strategies as st

HOSTILE_STRINGS = ["", "abc", "../../etc/hostname", "/dev/zero", "F64", "I64", "BOOL", "NaN", "-1", "1e999",
                   "\x00", "é" * 3, "b'\\xff'"]
HOSTILE_NUMBERS = [-1, 0, 1, 2 ** 24, 2 ** 31, 2 ** 63, 10 ** 12, -(2 ** 70), 1e308, -0.5]

VALUES = st.one_of(
    st.none(), st.booleans(), st.sampled_from(HOSTILE_NUMBERS), st.integers(-(2 ** 70), 2 ** 70),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(HOSTILE_STRINGS), st.text(max_size=6),
    st.just([]), st.just({}), st.lists(st.integers(-3, 3), max_size=3), st.just({"a": 1}),
)


def value_paths(node, prefix=()):
    """Every path (a tuple of keys and indices) to a value inside dicts and lists, root excluded."""
    children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in children:
        yield prefix + (key,)
        yield from value_paths(child, prefix + (key,))


@st.composite
def json_mutation(draw, document, max_changes: int = 3):
    """A deep copy of `document` with 1..max_changes values replaced or keys deleted."""
    doc = copy.deepcopy(document)
    for _ in range(draw(st.integers(1, max_changes))):
        paths = list(value_paths(doc))
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        if isinstance(parent, dict) and draw(st.booleans()):
            del parent[path[-1]]
        else:
            parent[path[-1]] = copy.deepcopy(draw(VALUES))   # st.just's objects are shared: a later
                                                             # change inside one must not make a cycle
    return doc


@st.composite
def byte_mutation(draw, data: bytes):
    kind = draw(st.sampled_from(["flip", "insert", "cut", "truncate", "random"]))
    if kind == "random" or not data:
        return draw(st.binary(max_size=300))
    at = draw(st.integers(0, len(data) - 1))
    if kind == "flip":
        return data[:at] + bytes([data[at] ^ draw(st.integers(1, 255))]) + data[at + 1:]
    if kind == "insert":
        return data[:at] + draw(st.binary(min_size=1, max_size=16)) + data[at:]
    if kind == "cut":
        return data[:at] + data[at + draw(st.integers(1, 16)):]
    return data[:at]


@st.composite
def line_mutation(draw, text: str):
    lines = text.split("\n")
    at = draw(st.integers(0, len(lines) - 1))
    kind = draw(st.sampled_from(["field", "field", "delete", "repeat", "insert"]))
    if kind == "field":
        fields = lines[at].split(" ")
        which = draw(st.integers(0, len(fields) - 1))
        fields[which] = draw(st.one_of(st.sampled_from(HOSTILE_STRINGS), st.sampled_from([str(n) for n in
                                       HOSTILE_NUMBERS]), st.text(max_size=5)))
        lines[at] = " ".join(fields)
    elif kind == "delete":
        del lines[at]
    elif kind == "repeat":
        lines.insert(at, lines[at])
    else:
        lines.insert(at, draw(st.text(max_size=20)))
    return "\n".join(lines)
