"""``python -m mini_world [FOLDER]``: write the mini world's prompt files (default: harness/prompts/mini)."""

import argparse
from pathlib import Path

from mini_world.world import write_prompt_files

DEFAULT = Path(__file__).resolve().parent.parent / "harness" / "prompts" / "mini"

parser = argparse.ArgumentParser(
    prog="python -m mini_world",
    description="Write the mini world's prompt files (train, test, validation; JSONL with GenEval-style metadata).",
)
parser.add_argument(
    "folder", nargs="?", type=Path, default=DEFAULT, help=f"where (default: {DEFAULT})"
)
for path in write_prompt_files(parser.parse_args().folder):
    print(path)
