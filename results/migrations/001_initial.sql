-- 001: runs, samples (one generated image each), scores (one scorer's verdict on one image).
CREATE TABLE runs (
    run_id           VARCHAR PRIMARY KEY,
    created_at       TIMESTAMP NOT NULL DEFAULT current_timestamp,
    model            VARCHAR NOT NULL,  -- hub id or path the weights came from
    lora             VARCHAR,           -- LoRA folder or hub id, if any
    protocol_version VARCHAR NOT NULL,
    protocol         JSON NOT NULL,     -- harness.protocol.EvalProtocol + per-benchmark plan
    provenance       JSON NOT NULL      -- git sha, package versions, world size, device, dtype, seeds
);

CREATE TABLE samples (
    run_id            VARCHAR NOT NULL,
    step              INTEGER NOT NULL,  -- training step for in-loop evaluation; 0 for a stand-alone eval
    benchmark         VARCHAR NOT NULL,
    benchmark_version VARCHAR NOT NULL,
    prompt_id         VARCHAR NOT NULL,  -- "<benchmark>/<index>"
    prompt_index      INTEGER NOT NULL,
    prompt            VARCHAR NOT NULL,
    meta              JSON NOT NULL,     -- the prompt's metadata (GenEval clauses, T2I-CompBench category)
    grp               VARCHAR,           -- aggregation group (GenEval tag, T2I-CompBench category); NULL = none
    image_index       INTEGER NOT NULL,
    seed              BIGINT NOT NULL,
    image_sha256      VARCHAR NOT NULL,
    image_path        VARCHAR NOT NULL,  -- relative to the store's images folder: <aa>/<sha256>.png
    created_at        TIMESTAMP NOT NULL DEFAULT current_timestamp,
    PRIMARY KEY (run_id, step, benchmark, prompt_id, image_index)
);

-- benchmark_version and grp are copied from the image's sample row so that the aggregate views read this table
-- alone (no join): the leaderboard stays fast over millions of rows.
CREATE TABLE scores (
    run_id            VARCHAR NOT NULL,
    step              INTEGER NOT NULL,
    benchmark         VARCHAR NOT NULL,
    benchmark_version VARCHAR NOT NULL,
    prompt_id         VARCHAR NOT NULL,
    grp               VARCHAR,
    image_index       INTEGER NOT NULL,
    scorer            VARCHAR NOT NULL,
    scorer_version    VARCHAR NOT NULL,
    value             DOUBLE NOT NULL,  -- raw metric value, native scale
    reward            DOUBLE,           -- Flow-GRPO training scale
    details           JSON,             -- GenEval tags, OCR text, judge rationale, ...
    created_at        TIMESTAMP NOT NULL DEFAULT current_timestamp,
    PRIMARY KEY (run_id, step, benchmark, prompt_id, image_index, scorer)
);
