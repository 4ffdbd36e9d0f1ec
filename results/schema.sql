-- The current schema of the results store, in one file. A new store is created from this file and every
-- migration in migrations/ is recorded as applied; an older store is brought here by applying its missing
-- migrations in order. tests/test_store.py checks that both paths give the same tables, columns and views.

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

-- Summaries of `samples` and `scores`, kept by `Store.add_samples` in the transaction that inserts the rows they
-- summarise (and emptied with them by `Store.delete_run`), so the aggregate views read hundreds of rows, not
-- millions. Sums and counts, never running means: a mean is `value_sum / n_images`, as exact as avg() over the rows.
CREATE TABLE sample_sums (
    run_id     VARCHAR NOT NULL,
    step       INTEGER NOT NULL,
    benchmark  VARCHAR NOT NULL,
    n_samples  BIGINT NOT NULL,
    PRIMARY KEY (run_id, step, benchmark)
);

CREATE TABLE score_sums (
    run_id            VARCHAR NOT NULL,
    step              INTEGER NOT NULL,
    benchmark         VARCHAR NOT NULL,
    scorer            VARCHAR NOT NULL,
    benchmark_version VARCHAR NOT NULL,  -- the least over the rows (as min() over them)
    scorer_version    VARCHAR NOT NULL,  -- the least over the rows
    n_images          BIGINT NOT NULL,
    value_sum         DOUBLE NOT NULL,
    n_rewards         BIGINT NOT NULL,   -- rows whose reward is not NULL
    reward_sum        DOUBLE NOT NULL,
    PRIMARY KEY (run_id, step, benchmark, scorer)
);

CREATE TABLE group_sums (
    run_id     VARCHAR NOT NULL,
    step       INTEGER NOT NULL,
    benchmark  VARCHAR NOT NULL,
    scorer     VARCHAR NOT NULL,
    grp        VARCHAR NOT NULL,
    n_images   BIGINT NOT NULL,
    value_sum  DOUBLE NOT NULL,
    PRIMARY KEY (run_id, step, benchmark, scorer, grp)
);

-- One row per (image, scorer): everything a number needs to be traced back.
CREATE VIEW sample_scores AS
SELECT s.run_id, s.step, s.benchmark, s.benchmark_version, s.prompt_id, s.prompt_index, s.prompt, s.meta,
       s.grp, s.image_index, s.seed, s.image_sha256, s.image_path,
       c.scorer, c.scorer_version, c.value, c.reward, c.details
FROM samples s
JOIN scores c USING (run_id, step, benchmark, prompt_id, image_index);

-- Per aggregation group (GenEval task, T2I-CompBench category): the mean over its images.
CREATE VIEW group_scores AS
SELECT run_id, step, benchmark, scorer, grp, n_images, value_sum / n_images AS mean
FROM group_sums;

-- Per (run, step, benchmark, scorer): the image mean, the mean of group means, and the headline `score`
-- (the mean of group means where the benchmark groups its images, else the image mean).
CREATE VIEW benchmark_scores AS
WITH grp AS (
    SELECT run_id, step, benchmark, scorer, count(*) AS n_groups, avg(value_sum / n_images) AS group_mean
    FROM group_sums
    GROUP BY run_id, step, benchmark, scorer
)
SELECT img.run_id, img.step, img.benchmark, img.benchmark_version, img.scorer, img.scorer_version,
       img.n_images, grp.n_groups, img.value_sum / img.n_images AS image_mean, grp.group_mean,
       CASE WHEN img.n_rewards > 0 THEN img.reward_sum / img.n_rewards END AS reward_mean,
       coalesce(grp.group_mean, img.value_sum / img.n_images) AS score
FROM score_sums img
LEFT JOIN grp USING (run_id, step, benchmark, scorer);

-- The paper's main table: GenEval, OCR, DeQA (DrawBench), PickScore and
-- Avg = mean(GenEval, OCR, DeQA / 5, PickScore / 26); NULL until all four exist.
CREATE VIEW main_table AS
WITH cols AS (
    SELECT run_id, step,
           max(score) FILTER (WHERE benchmark = 'geneval' AND scorer = 'geneval') AS geneval,
           max(score) FILTER (WHERE benchmark = 'ocr' AND scorer = 'ocr') AS ocr,
           max(score) FILTER (WHERE benchmark = 'drawbench' AND scorer = 'deqa') AS deqa,
           max(score) FILTER (WHERE benchmark = 'pickscore' AND scorer = 'pickscore') AS pickscore
    FROM benchmark_scores
    GROUP BY run_id, step
)
SELECT run_id, step, geneval, ocr, deqa, pickscore,
       (geneval + ocr + deqa / 5 + pickscore / 26) / 4 AS avg
FROM cols;
