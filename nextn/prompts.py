"""Built-in benchmark prompts by type, in the spirit of the llama.cpp MTP PR's prompt-type benchmark."""

from __future__ import annotations

import json
from pathlib import Path

_CODE = ("def moving_average(values, window):\n"
         "    \"\"\"The mean of each run of `window` consecutive values.\"\"\"\n"
         "    if window <= 0:\n"
         "        raise ValueError(\"window must be positive\")\n"
         "    out = []\n"
         "    total = 0.0\n"
         "    for i, value in enumerate(values):\n"
         "        total += value\n"
         "        if i >= window:\n"
         "            total -= values[i - window]\n"
         "        if i >= window - 1:\n"
         "            out.append(total / window)\n"
         "    return out\n")
_EDIT = ("# Before:\n{code}\n# After (renamed `out` to `averages`):\n" "def moving_average(values, window):\n")

PROMPTS: dict[str, list[str]] = {
    "code": [
        "import os\nimport sys\n\n\ndef main(argv):\n    \"\"\"Parse the command line and run.\"\"\"\n",
        "class LRUCache:\n    \"\"\"A least-recently-used cache of fixed size.\"\"\"\n\n    def __init__(self, maxsize=128):\n",
        "def read_config(path):\n    \"\"\"Read a configuration file and return a dict.\"\"\"\n    result = {}\n",
        "import unittest\n\n\nclass TestParser(unittest.TestCase):\n\n    def test_empty(self):\n",
    ],
    "math": [
        "# Compute the first twenty prime numbers\ndef primes(n):\n",
        "Question: A train travels 120 km in 2 hours. What is its average speed?\nAnswer:",
        "1 + 1 = 2\n2 + 2 = 4\n3 + 3 = 6\n4 + 4 =",
    ],
    "chat": [
        "<|im_start|>user\nHow do I read a file line by line in Python?<|im_end|>\n<|im_start|>assistant\n",
        "<|im_start|>user\nExplain what a dictionary is.<|im_end|>\n<|im_start|>assistant\n",
    ],
    # the output repeats or edits text of the prompt: where n-gram (prompt lookup) drafts should win
    "edit": [
        _EDIT.format(code=_CODE),
        "<|im_start|>user\nAdd type hints to this function and change nothing else:\n\n" + _CODE
        + "<|im_end|>\n<|im_start|>assistant\n```python\n",
        _CODE + "\n\n# The same function, with the loop unchanged:\n" + _CODE.split("\n", 1)[0] + "\n",
    ],
    "creative": [
        "Once upon a time, in a city built on the back of a sleeping giant,",
        "The letter arrived on a Tuesday, written in a hand nobody in the family recognised.",
    ],
}


def load_prompts(spec: str) -> dict[str, list[str]]:
    """'code,math' picks built-in types; a path reads a JSON {type: [prompts]} or a text file (one type)."""
    path = Path(spec)
    if path.exists():
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".json":
            data = json.loads(text)
            return {k: list(v) for k, v in data.items()}
        return {path.stem: [p for p in text.split("\n\n\n") if p.strip()]}
    names = [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [n for n in names if n not in PROMPTS]
    if unknown:
        raise ValueError(f"unknown prompt type(s) {unknown}: choose from {', '.join(PROMPTS)} or give a file")
    return {n: PROMPTS[n] for n in names}
