"""Request and response bodies of the service (pydantic), which are also its OpenAPI schema.

``ScoreRequest`` / ``ScoreResponse`` are the wire format of ``scorers/remote.py`` (``RemoteScorer`` speaks it):
``{"scorer", "images": [base64 PNG/JPEG], "prompts", "meta"}`` in, ``{"scorer", "version", "values",
"rewards", "details"}`` out. ``RunImport`` is one chunk of a finished run (``service.bundle`` makes them from a
local store): the run record, sample rows with their PNGs, and score rows.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from results.records import check_run_id

Json = dict[str, Any]
Cell = float | int | str | None
# a run id may hold "/" (`harness eval --run-id paper/seed0`), but not at its end
RUN_ID = r"^[A-Za-z0-9](?:[A-Za-z0-9._:@+=/-]{0,198}[A-Za-z0-9._:@+=-])?$"
SHA256 = r"^[0-9a-f]{64}$"
# what the store's columns hold (results/schema.sql): INTEGER step/prompt_index/image_index, BIGINT seed
INT32_MAX = 2**31 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


class Error(BaseModel):
    """Every error answer: one message saying what is wrong and what to do."""

    detail: str


class Health(BaseModel):
    status: Literal["ok"]
    store: str
    scorers: list[str]
    writes: bool  # whether a write token is configured


class ScorerInfo(BaseModel):
    name: str
    version: str
    gpu_gb: float
    batching: bool
    queued: int
    requests: int  # served so far
    calls: int  # scorer calls so far (fewer than requests when batching gathers them)


class ScoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scorer: str = Field(min_length=1, max_length=100)
    images: list[str] = Field(
        description="standard base64 (with padding) of PNG or JPEG file bytes"
    )
    prompts: list[str]
    meta: list[Json] | None = None


class ScoreResponse(BaseModel):
    scorer: str
    version: str
    values: list[float]
    rewards: list[float]
    details: list[Json] | None


class BenchmarkInfo(BaseModel):
    name: str
    version: str | None  # None for a user prompt file found only in the store
    description: str
    images_per_prompt: int | None
    scorers: list[str]
    group_by: str | None
    runs: int  # runs in the store with scores for it


class Column(BaseModel):
    name: str
    numeric: bool
    decimals: int | None


class LeaderboardRow(BaseModel):
    run_id: str
    model: str | None
    lora: str | None
    protocol: str  # a short summary: steps, cfg, size, encoding, protocol fingerprint
    step: int
    cells: dict[str, Cell]  # column name -> value
    partial: list[str]  # columns computed from fewer images than the benchmark holds
    contaminated: bool = False  # the model was trained on evaluation prompts: not a held-out result
    contamination: list[str] = []  # why, one line each (the training run's manifest: contaminated)
    name: str = ""  # readable: model + adapter · date
    rank: int | None = None  # None: shown apart, below the ranked rows
    status: str = ""  # '' ranked; 'partial', 'other protocol' or both: why it is apart


class LeaderboardTable(BaseModel):
    title: str
    columns: list[Column]
    rows: list[LeaderboardRow]
    notes: list[str]
    ranked_by: str = ""  # the benchmark's primary metric


class Leaderboard(BaseModel):
    benchmark: str
    tables: list[LeaderboardTable]


class RunSummary(BaseModel):
    run_id: str
    created_at: datetime | None
    model: str
    lora: str | None
    git_sha: str | None
    images: int
    scores: int
    benchmarks: list[str]
    last_step: int | None
    contaminated: bool = False  # the model was trained on evaluation prompts: not a held-out result
    contamination: list[str] = []  # why, one line each (the training run's manifest: contaminated)
    name: str = ""  # readable: model + adapter · date


class RunList(BaseModel):
    total: int
    offset: int
    runs: list[RunSummary]


class RunDetail(BaseModel):
    run_id: str
    created_at: datetime | None
    model: str
    lora: str | None
    protocol_version: str
    protocol: Json
    provenance: Json
    last_step: int | None
    tables: list[LeaderboardTable]
    contaminated: bool = False  # the model was trained on evaluation prompts: not a held-out result
    contamination: list[str] = []  # why, one line each (provenance["contaminated"])
    name: str = ""  # readable: model + adapter · date


class SampleScore(BaseModel):
    scorer: str
    scorer_version: str
    value: float
    reward: float | None
    details: Json | list[Any] | None


class Sample(BaseModel):
    step: int
    benchmark: str
    benchmark_version: str
    prompt_id: str
    prompt_index: int
    prompt: str
    meta: Json
    grp: str | None
    image_index: int
    seed: int
    image_sha256: str
    image_url: str
    scores: list[SampleScore]


class SamplePage(BaseModel):
    run_id: str
    step: int | None
    benchmark: str | None
    total: int
    offset: int
    limit: int
    next_offset: int | None
    samples: list[Sample]


class ImportRun(BaseModel):
    model_config = ConfigDict(extra="forbid")

    run_id: str = Field(pattern=RUN_ID)
    model: str = Field(min_length=1, max_length=1000)
    lora: str | None = Field(default=None, max_length=1000)
    protocol_version: str = Field(default="", max_length=100)
    protocol: Json
    provenance: Json

    @field_validator("run_id")
    @classmethod
    def _usable(cls, v: str) -> str:
        check_run_id(v)  # not ending in /samples: GET /v1/runs/{id}/samples could not reach it
        return v


class _ImportRow(BaseModel):
    """The key every imported row shares: which image of which prompt of which benchmark, at which step."""

    model_config = ConfigDict(extra="forbid")

    step: int = Field(ge=0, le=INT32_MAX)
    benchmark: str = Field(min_length=1, max_length=200)
    benchmark_version: str = Field(max_length=100)
    prompt_id: str = Field(min_length=1, max_length=300)
    grp: str | None = Field(default=None, max_length=200)
    image_index: int = Field(ge=0, le=INT32_MAX)


class ImportSample(_ImportRow):
    prompt_index: int = Field(ge=0, le=INT32_MAX)
    prompt: str = Field(max_length=10_000)
    meta: Json
    seed: int = Field(ge=INT64_MIN, le=INT64_MAX)
    image_sha256: str = Field(pattern=SHA256)
    image: str = Field(description="base64 PNG bytes; their sha256 must be image_sha256")


class ImportScore(_ImportRow):
    scorer: str = Field(min_length=1, max_length=100)
    scorer_version: str = Field(max_length=100)
    value: float = Field(allow_inf_nan=False)
    reward: float | None = Field(default=None, allow_inf_nan=False)
    details: Json | None = None


class RunImport(BaseModel):
    """One chunk of a run: send a big run as several chunks with the same ``run`` (re-sent rows are skipped)."""

    model_config = ConfigDict(extra="forbid")

    run: ImportRun
    samples: list[ImportSample] = []
    scores: list[ImportScore] = []


class ImportResult(BaseModel):
    run_id: str
    created: bool  # the run record is new
    samples_added: int
    scores_added: int
    samples_skipped: int  # already stored
    scores_skipped: int


class DeleteResult(BaseModel):
    run_id: str
    runs: int
    samples: int
    scores: int
