"""Strict JSON: the gateway's cheaper check answers exactly like the full one."""

from __future__ import annotations

import json
import random

import pytest

from userorg.strictjson import MAX_DEPTH, hot_path_problem, problem

CASES = [
    b'{"credential":"uok_live_x","action":"inference:invoke"}',
    b'{"credential":"a","credential":"b"}',
    b'{"a" : 1 , "b":{"c":"x:y:z","d":[{"e":1},{"e":2}]}}',
    b'{"a":{"b":1,"b":1}}',
    b'{"a":[{"k":1,"k":2}]}',
    b'{"a:b":1,"a:b":2}',
    b'{"a:b":1,"c":"d:e"}',
    b'{"a":"x\\":y","a":"z"}',
    b'{"a":"x\\":y"}',
    b'{"a\\u003a":1,"b":"\\u003a"}',
    b'{"a":"\\u0000"}',
    b'{"a":NaN}',
    b'{"a":Infinity}',
    b'{"a":1',
    b"[1,2,3]",
    b'"just:a:string"',
    b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1),
    b"",
    b"not json",
]


@pytest.mark.parametrize("body", CASES)
def test_the_hot_path_check_agrees_with_the_full_one(body: bytes) -> None:
    assert hot_path_problem(body) == problem(body)


def test_duplicates_are_named() -> None:
    assert hot_path_problem(b'{"credential":"a","credential":"b"}') == "duplicate key 'credential'"
    assert hot_path_problem(b'{"a":{"x:y":1,"x:y":2}}') == "duplicate key 'x:y'"


def _random_document(rng: random.Random, depth: int = 0) -> str:
    """JSON text with keys drawn from a small alphabet (so duplicates happen), colons and
    escapes in strings, whitespace around colons."""
    keys = ["a", "b", "a:b", "c:", ":", 'q\\"', "\\u003a"]
    if depth > 3 or rng.random() < 0.3:
        return rng.choice(['"x"', '"x:y"', "1", "2.5", "null", "true", '"\\u003a"', '":"'])
    if rng.random() < 0.3:
        return (
            "[" + ",".join(_random_document(rng, depth + 1) for _ in range(rng.randint(0, 3))) + "]"
        )
    members = [
        f'"{rng.choice(keys)}"{rng.choice(["", " "])}:{rng.choice(["", " "])}{_random_document(rng, depth + 1)}'
        for _ in range(rng.randint(0, 4))
    ]
    return "{" + ",".join(members) + "}"


def test_random_documents_agree() -> None:
    rng = random.Random(11)
    duplicates = 0
    for _ in range(3_000):
        body = _random_document(rng).encode()
        json.loads(body)  # the generator writes valid JSON
        expected = problem(body)
        assert hot_path_problem(body) == expected, body
        duplicates += expected is not None
    assert duplicates > 100  # the corpus does exercise the refusal
