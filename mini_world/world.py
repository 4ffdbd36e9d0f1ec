"""The mini world: a procedurally generated text-to-image world with exact ground truth, small enough for a CPU.

Images are 32 x 32 RGB. A scene holds coloured 8 x 8 shapes (square, circle, triangle, cross in six colours) in
the cells of a 3 x 3 grid on a dark background, or a short string drawn in a fixed 3 x 5 glyph font (scaled 2x, white). Prompts follow
GenEval's six task types in miniature, with GenEval's metadata format (``include``/``exclude`` clauses with
``class``, ``count``, ``color``, ``position``), so the **same** GenEval rule engine judges them; the text task uses
the **same** OCR reward as the real OCR scorer. Splits are fixed: ``prompts(split, n, seed)`` is deterministic,
and train and test are disjoint by construction (different seeds, and test prompts are removed from train). The
model is pretrained on strings of 1-3 glyphs; the OCR benchmark and teacher share the 18 single glyphs (at other
seeds, as GenEval's small tasks share their prompts) and the held-out strings are a benchmark of their own
(``prompt_files``).

Everything here is pure numpy/PIL: rendering, prompt generation, and the exact detector and glyph reader that the
mini scorers use to turn a generated image back into detections and text.
"""

from __future__ import annotations

import copy
import functools
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from flowbase.errors import InputError

SIZE = 32
BACKGROUND = (24, 24, 24)
TEXT_COLOR = (240, 240, 240)
# A washed-out background: 45 from BACKGROUND, so the detector and glyph reader (tolerance 60) still see background
# while ``quality``'s clean-pixel share (tolerance 40) counts it as off-palette.
FADED_BACKGROUND = (50, 50, 50)
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 50, 50),
    "green": (50, 190, 70),
    "blue": (60, 90, 230),
    "yellow": (235, 215, 50),
    "purple": (170, 70, 200),
    "pink": (245, 130, 200),
}
SHAPES = ("square", "circle", "triangle", "cross")
NUMBERS = {1: "one", 2: "two", 3: "three", 4: "four"}
RELATIONS = ("left of", "right of", "above", "below")
TASKS = ("single_object", "two_object", "counting", "colors", "position", "color_attr", "ocr")
GENEVAL_TASKS = TASKS[:6]

# 3 x 5 glyphs, rows top to bottom, '#' = ink. Digits and a few unambiguous capitals.
GLYPHS: dict[str, tuple[str, ...]] = {
    "0": ("###", "#.#", "#.#", "#.#", "###"),
    "1": (".#.", "##.", ".#.", ".#.", "###"),
    "2": ("###", "..#", "###", "#..", "###"),
    "3": ("###", "..#", ".##", "..#", "###"),
    "4": ("#.#", "#.#", "###", "..#", "..#"),
    "5": ("###", "#..", "###", "..#", "###"),
    "6": ("###", "#..", "###", "#.#", "###"),
    "7": ("###", "..#", ".#.", ".#.", ".#."),
    "8": ("###", "#.#", "###", "#.#", "###"),
    "9": ("###", "#.#", "###", "..#", "###"),
    "A": (".#.", "#.#", "###", "#.#", "#.#"),
    "C": ("###", "#..", "#..", "#..", "###"),
    "E": ("###", "#..", "##.", "#..", "###"),
    "H": ("#.#", "#.#", "###", "#.#", "#.#"),
    "L": ("#..", "#..", "#..", "#..", "###"),
    "P": ("##.", "#.#", "##.", "#..", "#.."),
    "T": ("###", ".#.", ".#.", ".#.", ".#."),
    "U": ("#.#", "#.#", "#.#", "#.#", "###"),
}
GLYPH_SCALE = 2
GLYPH_W, GLYPH_H = 3 * GLYPH_SCALE, 5 * GLYPH_SCALE
GLYPH_GAP = 2


@dataclass(frozen=True)
class Shape:
    """One drawn object: class, colour and its box (x0, y0, x1, y1), inclusive-exclusive pixels."""

    cls: str
    color: str
    box: tuple[int, int, int, int]


@dataclass
class Scene:
    """What an image shows (exact ground truth)."""

    shapes: list[Shape] = field(default_factory=list)
    text: str | None = None


# -- prompts ---------------------------------------------------------------------------------------------------
def _plural(cls: str) -> str:
    return cls + "s"


def _an(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def make_prompt(task: str, rng: random.Random) -> dict[str, Any]:
    """One prompt of ``task`` with GenEval-style metadata (``tag``, ``include``, ``exclude``) or OCR text."""
    if task == "single_object":
        c = rng.choice(SHAPES)
        return {"tag": task, "prompt": f"{_an(c)} {c}", "include": [{"class": c, "count": 1}]}
    if task == "two_object":
        a, b = rng.sample(SHAPES, 2)
        return {
            "tag": task,
            "prompt": f"{_an(a)} {a} and {_an(b)} {b}",
            "include": [{"class": a, "count": 1}, {"class": b, "count": 1}],
        }
    if task == "counting":
        c, n = rng.choice(SHAPES), rng.choice((2, 3, 4))
        return {
            "tag": task,
            "prompt": f"{NUMBERS[n]} {_plural(c)}",
            "include": [{"class": c, "count": n}],
            "exclude": [{"class": c, "count": n + 1}],
        }
    if task == "colors":
        c, col = rng.choice(SHAPES), rng.choice(list(COLORS))
        return {
            "tag": task,
            "prompt": f"{_an(col)} {col} {c}",
            "include": [{"class": c, "count": 1, "color": col}],
        }
    if task == "position":
        a, b = rng.sample(SHAPES, 2)
        rel = rng.choice(RELATIONS)
        return {
            "tag": task,
            "prompt": f"{_an(a)} {a} {rel} {_an(b)} {b}",
            "include": [{"class": b, "count": 1}, {"class": a, "count": 1, "position": [rel, 0]}],
        }
    if task == "color_attr":
        a, b = rng.sample(SHAPES, 2)
        ca, cb = rng.sample(list(COLORS), 2)
        return {
            "tag": task,
            "prompt": f"{_an(ca)} {ca} {a} and {_an(cb)} {cb} {b}",
            "include": [
                {"class": a, "count": 1, "color": ca},
                {"class": b, "count": 1, "color": cb},
            ],
        }
    if task == "ocr":
        text = "".join(rng.choice(list(GLYPHS)) for _ in range(rng.choice((1, 2, 3))))
        return {"tag": task, "prompt": f'the text "{text}"', "text": text}
    raise InputError(f"unknown mini-world task {task!r}; known: {', '.join(TASKS)}")


@functools.cache
def _all_prompts(task: str) -> tuple[dict[str, Any], ...]:
    seen: dict[str, dict[str, Any]] = {}
    rng = random.Random(f"enumerate-{task}")
    for _ in range(20000):
        p = make_prompt(task, rng)
        seen.setdefault(p["prompt"], p)
    return tuple(seen[k] for k in sorted(seen))


def all_prompts(task: str) -> list[dict[str, Any]]:
    """Every distinct prompt of a task (the space is small enough to enumerate), in a fixed order."""
    return copy.deepcopy(list(_all_prompts(task)))


SMALL_TASK = (
    30  # tasks with fewer distinct prompts share them between splits (the splits differ by seeds)
)


def split_prompts(task: str, split: str, test_fraction: float = 0.3) -> list[dict[str, Any]]:
    """A fixed train or test split of a task's distinct prompts (the same on every machine).

    Tasks with at least ``SMALL_TASK`` distinct prompts are split disjointly; smaller ones (single_object has 4
    prompts) use every prompt in both splits, and train and test differ only by their seeds.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    prompts = all_prompts(task)
    if len(prompts) < SMALL_TASK:
        return prompts
    order = list(range(len(prompts)))
    random.Random(f"split-{task}").shuffle(order)
    n_test = max(1, round(len(prompts) * test_fraction))
    chosen = order[:n_test] if split == "test" else order[n_test:]
    return [prompts[i] for i in sorted(chosen)]


# -- rendering -------------------------------------------------------------------------------------------------
GRID = 3  # shapes sit in the cells of a 3 x 3 grid
CELL = 10  # cell size in pixels (the grid starts 1 px from the border)
SHAPE_SIZE = 8  # every shape is drawn 8 x 8, centred in its cell


def cell_box(row: int, col: int) -> tuple[int, int, int, int]:
    """The box (x0, y0, x1, y1) of a shape in grid cell (row, col)."""
    x0 = 1 + col * CELL + (CELL - SHAPE_SIZE) // 2
    y0 = 1 + row * CELL + (CELL - SHAPE_SIZE) // 2
    return (x0, y0, x0 + SHAPE_SIZE, y0 + SHAPE_SIZE)


def scene_for(meta: dict[str, Any], rng: random.Random) -> Scene:
    """A scene that satisfies the prompt's metadata exactly (ground truth for pretraining)."""
    if meta["tag"] == "ocr":
        return Scene(text=meta["text"])
    for _ in range(200):
        shapes = _place(meta, rng)
        if shapes is not None:
            return Scene(shapes=shapes)
    raise RuntimeError(f"could not place {meta['prompt']!r}")  # pragma: no cover - never seen


_STEP = {"left of": (0, -1), "right of": (0, 1), "above": (-1, 0), "below": (1, 0)}


def _place(meta: dict[str, Any], rng: random.Random) -> list[Shape] | None:
    """Put each requested object in its own grid cell; a position clause puts its object in the reference's row
    (left / right) or column (above / below), on the asked side."""
    free = [(r, c) for r in range(GRID) for c in range(GRID)]
    rng.shuffle(free)
    shapes: list[Shape] = []
    cells: list[tuple[int, int]] = []
    for clause in meta["include"]:
        pos = clause.get("position")
        for _ in range(clause["count"]):
            if pos is None:
                cell = free.pop()
            else:
                ref_r, ref_c = cells[0]  # the referenced clause is include[0] in every mini prompt
                dr, dc = _STEP[pos[0]]
                options = [
                    (ref_r + dr * k, ref_c + dc * k)
                    for k in range(1, GRID)
                    if (ref_r + dr * k, ref_c + dc * k) in free
                ]
                if not options:
                    return None
                cell = rng.choice(options)
                free.remove(cell)
            color = clause.get("color") or rng.choice(list(COLORS))
            shapes.append(Shape(clause["class"], color, cell_box(*cell)))
            cells.append(cell)
    return shapes


def render(scene: Scene) -> Image.Image:
    """Draw a scene as a 32 x 32 RGB image (crisp, no anti-aliasing)."""
    arr = np.empty((SIZE, SIZE, 3), dtype=np.uint8)
    arr[:] = BACKGROUND
    for s in scene.shapes:
        x0, y0, x1, y1 = s.box
        arr[y0:y1, x0:x1][shape_mask(s.cls, x1 - x0, y1 - y0)] = COLORS[s.color]
    img = Image.fromarray(arr)
    if scene.text:
        _draw_text(img, scene.text)
    return img


def shape_mask(cls: str, w: int, h: int) -> np.ndarray:
    """The pixels a shape of class ``cls`` covers in a w x h box (boolean [h, w]); shared by renderer and detector."""
    canvas = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    if cls == "square":
        draw.rectangle((0, 0, w - 1, h - 1), fill=255)
    elif cls == "circle":
        draw.ellipse((0, 0, w - 1, h - 1), fill=255)
    elif cls == "triangle":
        draw.polygon([((w - 1) / 2, 0), (0, h - 1), (w - 1, h - 1)], fill=255)
    elif cls == "cross":
        tw, th = max(1, round(w / 3)), max(1, round(h / 3))
        draw.rectangle(((w - tw) // 2, 0, (w - tw) // 2 + tw - 1, h - 1), fill=255)
        draw.rectangle((0, (h - th) // 2, w - 1, (h - th) // 2 + th - 1), fill=255)
    else:
        raise ValueError(f"unknown shape {cls!r}; known: {', '.join(SHAPES)}")
    return np.asarray(canvas) > 0


def _draw_text(img: Image.Image, text: str) -> None:
    arr = np.array(img)
    width = len(text) * GLYPH_W + (len(text) - 1) * GLYPH_GAP
    x = (SIZE - width) // 2
    y = (SIZE - GLYPH_H) // 2
    for ch in text:
        bitmap = np.array([[c == "#" for c in row] for row in GLYPHS[ch]])
        big = np.kron(bitmap, np.ones((GLYPH_SCALE, GLYPH_SCALE), dtype=bool))
        arr[y : y + GLYPH_H, x : x + GLYPH_W][big] = TEXT_COLOR
        x += GLYPH_W + GLYPH_GAP
    img.paste(Image.fromarray(arr))


def fade(img: Image.Image) -> Image.Image:
    """The same image on the faded background (``FADED_BACKGROUND``): what the prompt asks is all still there."""
    arr = np.array(img)
    arr[(arr == BACKGROUND).all(-1)] = FADED_BACKGROUND
    return Image.fromarray(arr)


def sample_pairs(
    tasks: tuple[str, ...], split: str, seed: int, faded: float = 0.0
) -> Iterator[tuple[dict[str, Any], Image.Image]]:
    """An endless stream of (prompt metadata, ground-truth image) for pretraining, tasks drawn uniformly.

    ``faded``: the share of images drawn on the faded background, which no prompt mentions (the web's low-quality
    photos in miniature). The draws come from their own generator, so the stream's prompts and scenes are the same
    whatever ``faded`` is.
    """
    if not 0.0 <= faded <= 1.0:
        raise ValueError(f"faded={faded} must be in [0, 1]")
    rng = random.Random(seed)
    fade_rng = random.Random(f"fade-{seed}")
    pools = {t: split_prompts(t, split) for t in tasks}
    while True:
        meta = rng.choice(pools[rng.choice(tasks)])
        img = render(scene_for(meta, rng))
        yield meta, (fade(img) if faded and fade_rng.random() < faded else img)


# -- exact perception ------------------------------------------------------------------------------------------
_PALETTE = np.array([BACKGROUND, TEXT_COLOR, *COLORS.values()], dtype=np.float32)
_PALETTE_NAMES = ("background", "text", *COLORS)


MIN_AREA = 12  # smaller palette components are fragments, not shapes
# a character that differs from every glyph in more than this share of its pixels reads as '?'
GLYPH_MAX_DISTANCE = 0.2


def classify_pixels(img: Image.Image, tolerance: float = 60.0) -> np.ndarray:
    """Each pixel's nearest palette entry (index into background, text, colours) or -1 if none is near."""
    arr = np.asarray(img.convert("RGB"), dtype=np.float32)
    dist = np.linalg.norm(arr[:, :, None, :] - _PALETTE[None, None], axis=-1)
    idx = dist.argmin(-1)
    idx[dist.min(-1) > tolerance] = -1
    return idx


def _components(mask: np.ndarray) -> list[np.ndarray]:
    """4-connected components of a boolean mask, as lists of (y, x) pixel coordinates."""
    seen = np.zeros_like(mask, dtype=bool)
    comps = []
    h, w = mask.shape
    for y0, x0 in zip(*np.nonzero(mask), strict=True):
        if seen[y0, x0]:
            continue
        stack, pix = [(y0, x0)], []
        seen[y0, x0] = True
        while stack:
            y, x = stack.pop()
            pix.append((y, x))
            for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    stack.append((ny, nx))
        comps.append(np.array(pix))
    return comps


@dataclass(frozen=True)
class Detection:
    """An object found in an image: class, score in (0, 1], box (x0, y0, x1, y1) and colour."""

    cls: str
    score: float
    box: tuple[float, float, float, float]
    color: str


def detect(img: Image.Image, min_area: int = MIN_AREA) -> list[Detection]:
    """Find shapes: palette-coloured connected components, classified by template IoU within their box.

    Each component is compared with every shape drawn in its own bounding box; the best IoU is the class and the
    score (discounted for boxes far from square, since every shape is drawn in a square box). A ground-truth
    rendering scores exactly 1; blurry or malformed blobs score low and fail GenEval's 0.3 / 0.9 thresholds
    instead of being counted.
    """
    labels = classify_pixels(img)
    out: list[Detection] = []
    for name, comp in _colour_components(labels):
        if len(comp) < min_area:
            continue
        cls, score, box = _classify_component(comp)
        if score > 0:
            out.append(Detection(cls, score, box, name))
    return sorted(out, key=lambda d: -d.score)


def _colour_components(labels: np.ndarray) -> Iterator[tuple[str, np.ndarray]]:
    """(colour name, pixel coordinates) of every connected component of a shape colour."""
    for k, name in enumerate(_PALETTE_NAMES):
        if name not in ("background", "text"):
            for comp in _components(labels == k):
                yield name, comp


def _classify_component(comp: np.ndarray) -> tuple[str, float, tuple[float, float, float, float]]:
    """A component's best-matching shape, its score (template IoU, discounted off-square) and its box."""
    y0, x0 = comp.min(0)
    y1, x1 = comp.max(0) + 1
    w, h = int(x1 - x0), int(y1 - y0)
    mask = np.zeros((h, w), dtype=bool)
    mask[comp[:, 0] - y0, comp[:, 1] - x0] = True
    ious = {c: _iou(mask, shape_mask(c, w, h)) for c in SHAPES}
    cls = max(ious, key=lambda c: ious[c])
    aspect = min(w, h) / max(w, h)
    score = float(ious[cls] * min(1.0, aspect / 0.8))
    return cls, score, (float(x0), float(y0), float(x1), float(y1))


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def read_text(img: Image.Image, max_distance: float = GLYPH_MAX_DISTANCE) -> str:
    """Read glyph-font text: split text-coloured ink into columns of characters and match each to a glyph.

    A character whose best template still differs in more than ``max_distance`` of its pixels reads as '?'.
    """
    ink = classify_pixels(img) == 1
    return "".join(_match_glyph(cell, max_distance) for cell in _text_cells(ink))


def _text_cells(ink: np.ndarray) -> Iterator[np.ndarray]:
    """Split text ink into characters: runs of columns that hold ink."""
    cols = ink.any(0)
    x = 0
    while x < ink.shape[1]:
        if not cols[x]:
            x += 1
            continue
        start = x
        while x < ink.shape[1] and cols[x]:
            x += 1
        yield ink[:, start:x]


_TEMPLATES = {
    ch: np.kron(
        np.array([[c == "#" for c in row] for row in g]), np.ones((GLYPH_SCALE,) * 2, dtype=bool)
    )
    for ch, g in GLYPHS.items()
}


def _match_glyph(cell: np.ndarray, max_distance: float) -> str:
    rows = np.nonzero(cell.any(1))[0]
    if len(rows) == 0:
        return ""
    cell = cell[rows[0] : rows[-1] + 1]
    h, w = cell.shape
    if h > GLYPH_H + 2 or w > GLYPH_W + 2:
        return "?"
    canvas = np.zeros((GLYPH_H, GLYPH_W), dtype=bool)
    canvas[: min(h, GLYPH_H), : min(w, GLYPH_W)] = cell[:GLYPH_H, :GLYPH_W]
    best, dist = "?", 1.0
    for ch, tpl in _TEMPLATES.items():
        d = float((tpl != canvas).mean())
        if d < dist:
            best, dist = ch, d
    return best if dist <= max_distance else "?"


def quality(img: Image.Image) -> float:
    """Image quality in [0, 1]: half clean pixels, half well-formed content.

    - clean: the share of pixels that sit on the palette (clean background, clean ink); noise, blur and muddy
      colours lower it;
    - form: the share of drawn (non-background) pixels that belong to well-formed things, each shape component
      weighted by its template score (as ``detect`` computes it; fragments under ``detect``'s minimum area count 0)
      and each text character by whether the glyph reader recognises it. An image with nothing drawn has form 0.

    The world's ground-truth images score 1 whatever the prompt; it looks at no prompt, like the paper's
    aesthetic/DeQA signal, and plays its role (a task-independent quality teacher and MAR anchor).
    """
    labels = classify_pixels(img, tolerance=40.0)
    clean = float((labels >= 0).mean())
    return 0.5 * clean + 0.5 * form(img)


def form(img: Image.Image) -> float:
    """The share of drawn pixels in well-formed shapes and recognised glyphs (0 when nothing is drawn)."""
    labels = classify_pixels(img)
    drawn, good = 0, 0.0
    for _, comp in _colour_components(labels):
        drawn += len(comp)
        if len(comp) >= MIN_AREA:
            good += len(comp) * _classify_component(comp)[1]
    for cell in _text_cells(labels == 1):
        n = int(cell.sum())
        drawn += n
        if _match_glyph(cell, GLYPH_MAX_DISTANCE) not in ("?", ""):
            good += n
    return good / drawn if drawn else 0.0


# -- shipped prompt files --------------------------------------------------------------------------------------
# The OCR benchmark draws single glyphs: 18 prompts, each drawn on OCR_TEST_LINES lines (other seeds), and the OCR
# teacher trains on the same 18 (like GenEval's small tasks, which share prompts between splits), each cycled so
# the file is as long as the GenEval training file. Strings of 2-3 glyphs need each character bound to its place,
# which the mini base barely does (like GenEval's position and colour attribution) and no CPU-sized GRPO run moved
# (README, "The mini world"); they stay a held-out benchmark of their own (``ocr_strings_test.jsonl``: 400 random
# strings of the 1,283-string test split).
OCR_TEST_LINES = 24
OCR_STRINGS_TEST_PROMPTS = 400
TASK_TEST_LINES = (
    24  # every GenEval-style task gets this many test lines (small tasks cycle their prompts)
)
# Validation sets for choosing a checkpoint during training (``run.keep_best``): training prompts, never test ones,
# drawn so that no line shows the test file's prompt at the same index (the evaluation seeds image j of line i with
# ``seed + i*K + j``, so a shared (prompt, index) would be the same image as the test's).
TASK_VAL_LINES = 8
OCR_VAL_LINES = 4


def glyph_prompts() -> list[dict[str, Any]]:
    """The OCR benchmark's prompts: every glyph on its own (``the text "A"``), in the font's order."""
    return [{"tag": "ocr", "prompt": f'the text "{ch}"', "text": ch} for ch in GLYPHS]


def prompt_files() -> dict[str, list[dict[str, Any]]]:
    """The mini world's prompt files (what ships in harness/prompts/mini).

    The GenEval-style test file gives each of the six tasks the same weight in lines: a task's test prompts are
    cycled (single_object has 4) or cut (color_attr has 108) to ``TASK_TEST_LINES`` lines, so every task
    accuracy rests on the same number of images (repeated prompts get other seeds, being other lines). The train
    file cycles every task's train prompts to the largest task's count, so each task is trained equally often.
    The OCR files hold the single glyphs (test: each on ``OCR_TEST_LINES`` lines); ``ocr_strings_test.jsonl`` is
    the held-out multi-glyph test. ``*_val.jsonl`` are drawn from the training prompts (``val_files``).
    """
    test = []
    for t in GENEVAL_TASKS:
        prompts = split_prompts(t, "test")
        test += [prompts[i % len(prompts)] for i in range(TASK_TEST_LINES)]
    # Training is balanced the same way: every task is cycled to the largest task's count (color_attr, 252), so a
    # recipe drawing lines uniformly trains each task as often as the test weighs it (not 75% color_attr).
    train = {t: split_prompts(t, "train") for t in GENEVAL_TASKS}
    per_task = max(len(v) for v in train.values())
    geneval_train = [v[i % len(v)] for v in train.values() for i in range(per_task)]
    glyphs = glyph_prompts()
    return {
        "geneval_train.jsonl": geneval_train,
        "geneval_test.jsonl": test,
        # as many lines as the GenEval file, so recipes drawing from the union of lines (the quality teacher, SFT,
        # Flow-OPD) give text half their prompts, as in the teachers' mix of tasks
        "ocr_train.jsonl": [glyphs[i % len(glyphs)] for i in range(len(geneval_train))],
        "ocr_test.jsonl": [g for _ in range(OCR_TEST_LINES) for g in glyphs],
        "ocr_strings_test.jsonl": _subset(
            split_prompts("ocr", "test"), OCR_STRINGS_TEST_PROMPTS, seed=0
        ),
        **val_files(train, glyphs),
    }


def val_files(
    train: dict[str, list[dict[str, Any]]], glyphs: list[dict[str, Any]]
) -> dict[str, list[dict[str, Any]]]:
    """The validation files: ``TASK_VAL_LINES`` lines of each task's train prompts (a fixed random draw, cycled for
    small tasks), tasks in reverse order, and each glyph on ``OCR_VAL_LINES`` lines, shifted by one against the test
    file's order; either way no line index holds the test file's prompt (``prompt_files``)."""
    geneval = []
    for t in reversed(GENEVAL_TASKS):
        prompts = train[t]
        if len(prompts) > TASK_VAL_LINES:
            prompts = _subset(prompts, TASK_VAL_LINES, seed=1)
        geneval += [prompts[i % len(prompts)] for i in range(TASK_VAL_LINES)]
    n = len(glyphs)
    ocr = [glyphs[(i + 1) % n] for i in range(OCR_VAL_LINES * n)]
    return {"geneval_val.jsonl": geneval, "ocr_val.jsonl": ocr}


def _subset(items: list[Any], n: int, seed: int) -> list[Any]:
    """``n`` items drawn at random (fixed seed), in their original order: the split's head would be biased (the
    OCR test split is sorted, so its first 200 strings all start with '0')."""
    keep = sorted(random.Random(seed).sample(range(len(items)), n))
    return [items[i] for i in keep]


def write_prompt_files(folder: str | Path) -> list[Path]:
    """Write ``prompt_files()`` as JSONL (one prompt with its metadata per line)."""
    import json

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, rows in prompt_files().items():
        path = out / name
        path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
        written.append(path)
    return written
