"""Training prompt sets that share no prompt with any evaluation benchmark.

Three sets, each built deterministically from this module (and the prompt files it names) and checked against a
recorded sha256, so a paper-scale preset trains on the same bytes everywhere and never on test prompts:

- ``geneval_train``: GenEval metadata JSONL made the way Flow-GRPO made its GenEval training set. GenEval's prompt
  generator (djghosh13/geneval, prompts/create_prompts.py) builds per-task pools over its 80 classes, 10 colours,
  counts 2-4 and 4 relations; Flow-GRPO's merge (dataset/merge_genevaltask.py) samples 50,000 lines from the pools
  with task weights position 0.7, color_attr 0.3, colors 0.1, counting 0.5, two_object 0.1 (normalised,
  largest-remainder rounding; without replacement where a pool is large enough); then every line whose prompt is an
  evaluation prompt is dropped, and, as Flow-GRPO's authors describe for their set, also every "A and B" line whose
  swapped form "B and A" is. Our own code and seed: the lines are not Flow-GRPO's (their file is not public).
- ``ocr_train``: 20,000 procedural scene prompts with exactly one double-quoted text each (word lists and scenes in
  ``harness.trainsets_words``), none of whose texts is a text of the OCR test set. Flow-GRPO's GPT-written training
  prompts are not public; these stand in for them.
- ``pickscore_train``: Flow-GRPO's PickScore training split with its evaluation prompts removed, order kept.

Randomness comes only from ``random.Random(seed).random()``, whose stream Python guarantees across versions; every
choice, sample and shuffle below is built on it. ``python -m harness.trainsets --help`` lists, builds and checks.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from random import Random
from typing import Any, NamedTuple, TypeVar

from flowbase.errors import InputError, UnknownNameError
from harness import trainsets_words as words
from harness.benchmarks import PROMPTS_DIR, load_benchmark_prompts
from harness.splits import is_evaluation_prompt, normalise

ROOT: Path = PROMPTS_DIR  # where built sets are written (tests point it elsewhere); sources stay in PROMPTS_DIR
PROJECT_ROOT = Path(__file__).resolve().parent.parent

T = TypeVar("T")


class Built(NamedTuple):
    """A set's lines (without newlines) and what the builder counted on the way."""

    lines: list[str]
    stats: dict[str, Any]


# ------------------------------------------------------------------------------------------------ randomness


def _below(rng: Random, n: int) -> int:
    """A uniform integer in [0, n), from ``rng.random()`` only."""
    return min(int(rng.random() * n), n - 1)


def _pick(rng: Random, seq: Sequence[T]) -> T:
    return seq[_below(rng, len(seq))]


def _pair(rng: Random, n: int) -> tuple[int, int]:
    """Two distinct indices in [0, n), ordered (uniform over ordered pairs)."""
    a = _below(rng, n)
    b = _below(rng, n - 1)
    return a, b + (b >= a)


def _shuffle(rng: Random, items: list[T]) -> None:
    """Fisher-Yates, in place."""
    for i in range(len(items) - 1, 0, -1):
        j = _below(rng, i + 1)
        items[i], items[j] = items[j], items[i]


def _sample(rng: Random, items: Sequence[T], k: int) -> list[T]:
    """``k`` distinct positions of ``items`` in random order (partial Fisher-Yates)."""
    pool = list(items)
    for i in range(k):
        j = i + _below(rng, len(pool) - i)
        pool[i], pool[j] = pool[j], pool[i]
    return pool[:k]


# ------------------------------------------------------------------------------------------------ GenEval

GENEVAL_SEED = 20_250_501
GENEVAL_TOTAL = 50_000  # lines sampled before the filter (Flow-GRPO's total)
GENEVAL_POOL_DRAWS = 50_000  # generator draws per task, before de-duplication (ours)
# Flow-GRPO's task weights in tenths (0.7, 0.3, 0.1, 0.5, 0.1; single_object 0), in their task order.
GENEVAL_WEIGHTS: dict[str, int] = {
    "position": 7,
    "color_attr": 3,
    "colors": 1,
    "counting": 5,
    "two_object": 1,
}
# GenEval's generator: its colours, relations, number words and count range (2 to 4 inclusive).
GENEVAL_COLORS = tuple("red orange yellow green blue purple pink brown black white".split())
GENEVAL_RELATIONS = ("left of", "right of", "above", "below")
GENEVAL_NUMBERS = tuple("zero one two three four five six seven eight nine ten".split())
GENEVAL_COUNTS = (2, 3, 4)
_PERSON = 0  # the index of "person", which GenEval never colours (checked in geneval_classes)


def geneval_classes() -> tuple[str, ...]:
    """GenEval's 80 object names, in its order."""
    text = (PROMPTS_DIR / "geneval_official" / "object_names.txt").read_text(encoding="utf-8")
    classes = tuple(line.strip() for line in text.splitlines() if line.strip())
    if len(classes) != 80 or classes[_PERSON] != "person":
        raise ValueError(
            "geneval_official/object_names.txt is not GenEval's 80 classes with person first"
        )
    return classes


def allocate(weights: dict[str, int], total: int) -> dict[str, int]:
    """Largest-remainder split of ``total`` by ``weights`` (ties: earlier task first). Exact integer arithmetic."""
    whole = sum(weights.values())
    counts = {t: w * total // whole for t, w in weights.items()}
    left = total - sum(counts.values())
    by_remainder = sorted(weights, key=lambda t: -(weights[t] * total % whole))
    for t in by_remainder[:left]:
        counts[t] += 1
    return counts


def _a(word: str) -> str:
    """GenEval's article rule: "an" before a vowel letter."""
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"


def geneval_prompt(tag: str, include: list[dict[str, Any]]) -> str:
    """The prompt GenEval's generator writes for ``include`` (position: the related object comes second)."""
    if tag == "counting":
        name, count = include[0]["class"], include[0]["count"]
        plural = f"{name}es" if name.endswith("s") else f"{name}s"
        return f"a photo of {GENEVAL_NUMBERS[count]} {plural}"
    if tag == "colors":
        return f"a photo of {_a(include[0]['color'])} {include[0]['class']}"
    if tag == "position":
        anchor, moved = include
        return f"a photo of {_a(moved['class'])} {moved['position'][0]} {_a(anchor['class'])}"
    if tag == "two_object":
        return f"a photo of {_a(include[0]['class'])} and {_a(include[1]['class'])}"
    if tag == "color_attr":
        a, b = include
        return f"a photo of {_a(a['color'])} {a['class']} and {_a(b['color'])} {b['class']}"
    raise ValueError(f"unknown GenEval tag {tag!r}")


def _geneval_draw(rng: Random, tag: str, classes: tuple[str, ...]) -> tuple[Any, ...]:
    """One generator draw for ``tag`` as a hashable key (GenEval never colours a person)."""
    if tag == "counting":
        return (_below(rng, len(classes)), GENEVAL_COUNTS[_below(rng, len(GENEVAL_COUNTS))])
    if tag == "colors":
        i = _below(rng, len(classes) - 1)
        return (i + (i >= _PERSON), _below(rng, len(GENEVAL_COLORS)))
    if tag == "position":
        return (*_pair(rng, len(classes)), _below(rng, len(GENEVAL_RELATIONS)))
    if tag == "two_object":
        return _pair(rng, len(classes))
    a, b = _pair(rng, len(classes) - 1)  # color_attr
    return (a + (a >= _PERSON), b + (b >= _PERSON), *_pair(rng, len(GENEVAL_COLORS)))


def _geneval_record(tag: str, key: tuple[Any, ...], classes: tuple[str, ...]) -> dict[str, Any]:
    """A draw as an official metadata record: tag, include, [exclude,] prompt."""
    record: dict[str, Any] = {"tag": tag}
    if tag == "counting":
        name, n = classes[key[0]], key[1]
        record["include"] = [{"class": name, "count": n}]
        record["exclude"] = [{"class": name, "count": n + 1}]
    elif tag == "colors":
        record["include"] = [
            {"class": classes[key[0]], "count": 1, "color": GENEVAL_COLORS[key[1]]}
        ]
    elif tag == "position":
        moved, anchor, rel = classes[key[0]], classes[key[1]], GENEVAL_RELATIONS[key[2]]
        record["include"] = [
            {"class": anchor, "count": 1},
            {"class": moved, "count": 1, "position": [rel, 0]},
        ]
    elif tag == "two_object":
        record["include"] = [{"class": classes[i], "count": 1} for i in key]
    else:
        record["include"] = [
            {"class": classes[key[0]], "count": 1, "color": GENEVAL_COLORS[key[2]]},
            {"class": classes[key[1]], "count": 1, "color": GENEVAL_COLORS[key[3]]},
        ]
    record["prompt"] = geneval_prompt(tag, record["include"])
    return record


def geneval_held_out(record: dict[str, Any]) -> bool:
    """Whether a record is an evaluation prompt, or an "A and B" prompt whose "B and A" is one."""
    if is_evaluation_prompt(record["prompt"]):
        return True
    if record["tag"] in ("two_object", "color_attr"):
        return is_evaluation_prompt(geneval_prompt(record["tag"], record["include"][::-1]))
    return False


def _build_geneval() -> Built:
    rng = Random(GENEVAL_SEED)
    classes = geneval_classes()
    quotas = allocate(GENEVAL_WEIGHTS, GENEVAL_TOTAL)
    picked: list[tuple[str, str, bool]] = []  # (line, tag, held out)
    pools: dict[str, int] = {}
    for tag, k in quotas.items():
        # the task's pool: GENEVAL_POOL_DRAWS generator draws, duplicates dropped (first kept)
        pool = list(
            dict.fromkeys(_geneval_draw(rng, tag, classes) for _ in range(GENEVAL_POOL_DRAWS))
        )
        pools[tag] = n = len(pool)
        if n >= k:
            chosen = _sample(rng, range(n), k)
        else:
            chosen = [_below(rng, n) for _ in range(k)]
        lines: dict[int, tuple[str, str, bool]] = {}  # only the chosen pool entries are rendered
        for i in chosen:
            if i not in lines:
                record = _geneval_record(tag, pool[i], classes)
                lines[i] = (json.dumps(record), tag, geneval_held_out(record))
            picked.append(lines[i])
    _shuffle(rng, picked)
    removed = dict.fromkeys(quotas, 0)
    for _, tag, out in picked:
        removed[tag] += out
    kept = [line for line, _, out in picked if not out]
    return Built(kept, {"sampled": quotas, "pool": pools, "removed": removed})


# ------------------------------------------------------------------------------------------------ OCR

OCR_SEED = 19_653
OCR_LINES = 20_000
OCR_MAX_WORDS = 5
OCR_MAX_CHARS = 30
OCR_MAX_REPEATS = 20  # prompts per quoted text at most, so fixed phrases ("Game Over") stay rare
_SLOT = re.compile(r"\{(\w+)\}")


def ocr_test_texts() -> frozenset[str]:
    """The quoted texts of the OCR test set, normalised."""
    return frozenset(normalise(p.prompt.split('"')[1]) for p in load_benchmark_prompts("ocr"))


def _ocr_text(rng: Random, kind: str) -> str:
    """A quoted text of ``kind``: a pattern with each slot filled (a slot repeated in one text gets new words)."""
    while True:
        parts = _SLOT.split(_pick(rng, words.TEXT_KINDS[kind]))  # literal, slot, literal, ...
        used: set[str] = set()
        for i in range(1, len(parts), 2):
            choices = words.WORDS[parts[i]]
            word = _pick(rng, choices)
            while word in used and len(choices) > 1:
                word = _pick(rng, choices)
            used.add(word)
            parts[i] = word
        text = "".join(parts)
        if len(text.split()) <= OCR_MAX_WORDS and len(text) <= OCR_MAX_CHARS:
            return text


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _ocr_prompt(rng: Random) -> tuple[str, str]:
    """(prompt, its quoted text)."""
    scene = _pick(rng, words.SCENES)
    text = _ocr_text(rng, scene.kind)
    subject, setting = _pick(rng, scene.subjects), _pick(rng, scene.settings)
    prompt = _pick(rng, words.FRAMES).format(
        style=_pick(rng, words.STYLES),
        subject=subject,
        Subject=_cap(subject),
        show=_pick(rng, scene.shows),
        text=text,
        font=_pick(rng, scene.fonts or words.FONTS),
        setting=setting,
        Setting=_cap(setting),
        detail=_pick(rng, scene.details),
        light=_pick(rng, words.LIGHTS),
    )
    return prompt, text


def _build_ocr() -> Built:
    rng = Random(OCR_SEED)
    banned = ocr_test_texts()
    seen: set[str] = set()
    uses: dict[str, int] = {}
    lines: list[str] = []
    rejected = {"duplicate": 0, "repeated_text": 0, "test_text": 0, "evaluation_prompt": 0}
    while len(lines) < OCR_LINES:
        if sum(rejected.values()) > 10 * OCR_LINES:
            raise RuntimeError("the OCR generator keeps repeating itself; widen its word lists")
        prompt, text = _ocr_prompt(rng)
        key = normalise(text)
        if prompt in seen:
            rejected["duplicate"] += 1
        elif uses.get(key, 0) >= OCR_MAX_REPEATS:
            rejected["repeated_text"] += 1
        elif key in banned:
            rejected["test_text"] += 1
        elif is_evaluation_prompt(prompt):
            rejected["evaluation_prompt"] += 1
        else:
            seen.add(prompt)
            uses[key] = uses.get(key, 0) + 1
            lines.append(prompt)
    return Built(lines, {"rejected": rejected, "distinct_texts": len(uses)})


# ------------------------------------------------------------------------------------------------ PickScore

PICKSCORE_SOURCE = "flow_grpo_pickscore/train.txt"


def _build_pickscore() -> Built:
    text = (PROMPTS_DIR / PICKSCORE_SOURCE).read_text(encoding="utf-8")
    source = [line for line in text.split("\n") if line.strip()]
    kept = [line for line in source if not is_evaluation_prompt(line)]
    return Built(kept, {"source": len(source), "removed": len(source) - len(kept)})


# ------------------------------------------------------------------------------------------------ registry


@dataclass(frozen=True)
class TrainSet:
    """One training prompt set: where it lives, what it must hash to, how to build it."""

    name: str
    path: str  # relative to harness/prompts
    lines: int
    sha256: str  # of the file's bytes
    description: str
    builder: Callable[[], Built] = field(repr=False, compare=False)

    @property
    def file(self) -> Path:
        """Where the set is (under ``ROOT``, read at call time)."""
        return ROOT / self.path


TRAINSETS: dict[str, TrainSet] = {
    "geneval_train": TrainSet(
        "geneval_train",
        "geneval_train/train_metadata.jsonl",
        44_538,
        "78a8b149842f3db9284d45804dc7bbc5383459afcf63ef5e3dc14caae438ed0d",
        "GenEval metadata, 50,000 sampled by Flow-GRPO's task weights from GenEval-generator pools, "
        "evaluation prompts removed",
        _build_geneval,
    ),
    "ocr_train": TrainSet(
        "ocr_train",
        "ocr_train/train.txt",
        20_000,
        "f161edabcdb517b354afda6c20ae8e87fbc3629aaf3397f8425277aeb349b5ef",
        "20,000 procedural scene prompts with one quoted text each, no OCR test text",
        _build_ocr,
    ),
    "pickscore_train": TrainSet(
        "pickscore_train",
        "pickscore_train/train.txt",
        25_425,
        "42863dbeed2f02002b30c33836bf5d1dadb8146e056ee9f1e45050862ea7eda4",
        "Flow-GRPO's PickScore train split less its evaluation prompts, order kept",
        _build_pickscore,
    ),
}


def get(name: str) -> TrainSet:
    if name not in TRAINSETS:
        raise UnknownNameError(f"unknown training set {name!r}; known: {', '.join(TRAINSETS)}")
    return TRAINSETS[name]


def built(name: str) -> Built:
    """Build ``name`` in memory: its lines and the builder's counts."""
    return get(name).builder()


def render(name: str) -> bytes:
    """The exact bytes of ``name``'s file."""
    return "".join(f"{line}\n" for line in built(name).lines).encode("utf-8")


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _file_sha256(path: Path) -> str:
    return sha256_of(path.read_bytes())


def build(name: str) -> Path:
    """Write ``name``'s file (atomically: a temporary file in the same folder, then a rename)."""
    data, path = render(name), get(name).file
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def ensure(name: str) -> Path:
    """``name``'s file, built on first use; its sha256 is checked on every call."""
    ts = get(name)
    path = ts.file
    if not path.exists():
        build(name)
    digest = _file_sha256(path)
    if digest != ts.sha256:
        raise InputError(
            f"{path}: sha256 {digest[:16]}... is not the recorded {ts.sha256[:16]}...; rebuild it with "
            f"`python -m harness.trainsets build {name}` (if it still differs, run `python -m harness.trainsets check`)"
        )
    return path


def find(path: str | os.PathLike[str]) -> TrainSet | None:
    """The set whose file is ``path`` (absolute, or relative to the project root or the working folder)."""
    p = Path(path)
    for ts in TRAINSETS.values():
        if not p.is_absolute() and p.as_posix().removeprefix("./") in (
            f"harness/prompts/{ts.path}",
            ts.path,
        ):
            return ts
        target = ts.file.resolve()
        if p.is_absolute() and p.resolve() == target:
            return ts
        if not p.is_absolute() and target in ((PROJECT_ROOT / p).resolve(), p.resolve()):
            return ts
    return None


# ------------------------------------------------------------------------------------------------ command line


def _shown(path: Path) -> str:
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return str(path)


def _cmd_list(_: argparse.Namespace) -> int:
    for ts in TRAINSETS.values():
        if not ts.file.exists():
            state = "not built"
        else:
            state = "built" if _file_sha256(ts.file) == ts.sha256 else "built, checksum differs"
        print(f"{ts.name:16} {ts.lines:>7} lines  {_shown(ts.file)}  ({state})")
    return 0


def _cmd_build(args: argparse.Namespace) -> int:
    status = 0
    for name in args.names or list(TRAINSETS):
        ts, path = get(name), build(name)
        digest = _file_sha256(path)
        lines = path.read_bytes().count(b"\n")
        note = "" if digest == ts.sha256 else "  (differs from the recorded checksum)"
        status |= digest != ts.sha256
        print(f"{name}: {lines} lines, sha256 {digest} -> {_shown(path)}{note}")
    return status


def _cmd_check(_: argparse.Namespace) -> int:
    status = 0
    for ts in TRAINSETS.values():
        data = render(ts.name)
        digest, lines = sha256_of(data), data.count(b"\n")
        ok = digest == ts.sha256 and lines == ts.lines
        status |= not ok
        print(f"{ts.name}: {'ok' if ok else 'MISMATCH'} ({lines} lines, sha256 {digest})")
        if not ok:
            print(f"  recorded: {ts.lines} lines, sha256 {ts.sha256}")
    return status


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m harness.trainsets",
        description="Training prompt sets that share no prompt with any evaluation benchmark: "
        + ", ".join(TRAINSETS)
        + ". Files are built deterministically under harness/prompts/ and checked against recorded sha256s.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser(
        "list", help="each set's name, lines, path and whether it is built"
    ).set_defaults(run=_cmd_list)
    p_build = sub.add_parser(
        "build", help="(re)write set files; prints lines and sha256 (exit 1 if one differs)"
    )
    p_build.add_argument("names", nargs="*", metavar="NAME", help="sets to build (default: all)")
    p_build.set_defaults(run=_cmd_build)
    sub.add_parser(
        "check",
        help="rebuild every set in memory and compare with the recorded checksums (exit 1 on mismatch)",
    ).set_defaults(run=_cmd_check)
    args = parser.parse_args(argv)
    unknown = [n for n in getattr(args, "names", []) if n not in TRAINSETS]
    if unknown:
        parser.error(f"unknown set {', '.join(unknown)}; known: {', '.join(TRAINSETS)}")
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
