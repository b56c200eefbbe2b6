"""Chat prompts for speculation benchmarks, reproducible from a seed: copy-heavy ones
(`--workload copy`: "repeat this list", "copy this code"), whose answers repeat long runs
of the prompt, which is what n-gram speculation predicts; and open-ended ones
(`--workload novel`: write about a topic), whose answers have little to copy."""

from __future__ import annotations

import random

FRUITS = ("apple", "banana", "cherry", "damson", "elderberry", "fig", "grape", "huckleberry", "kiwi", "lemon",
          "mango", "nectarine", "orange", "papaya", "quince", "raspberry", "strawberry", "tangerine")
COLOURS = ("red", "green", "blue", "yellow", "purple", "orange", "black", "white", "brown", "grey")
NAMES = ("total", "count", "index", "value", "result", "items", "offset", "limit", "buffer", "score")


def list_prompt(rng: random.Random) -> str:
    items = [f"{i}. {rng.choice(COLOURS)} {rng.choice(FRUITS)}, {rng.randint(1, 99)} kg" for i in range(1, 31)]
    return "Repeat the following list exactly, line by line, and nothing else:\n\n" + "\n".join(items)


def code_prompt(rng: random.Random) -> str:
    lines = ["def process(data):"]
    for _ in range(16):
        a, b = rng.sample(NAMES, 2)
        lines.append(f"    {a} = {b} + data[{rng.randint(0, 9)}] * {rng.randint(2, 9)}")
    lines.append(f"    return {rng.choice(NAMES)}")
    return "Copy this Python function exactly as it is, with no comments:\n\n```python\n" + "\n".join(lines) + "\n```"


def copy_prompts(count: int, seed: int) -> list[str]:
    """`count` prompts, lists and code in turn."""
    rng = random.Random(seed)
    return [(list_prompt if i % 2 == 0 else code_prompt)(rng) for i in range(count)]


TOPICS = ("a lighthouse keeper's first winter", "how bread rises", "a city seen from a night train",
          "the history of the bicycle", "a letter from a ship's cook", "why the sky changes colour at dusk",
          "a market in the rain", "an old clock that runs backwards")


def novel_prompts(count: int, seed: int) -> list[str]:
    """`count` open-ended writing requests."""
    rng = random.Random(seed)
    return [f"Write a short original essay about {rng.choice(TOPICS)}." for _ in range(count)]
