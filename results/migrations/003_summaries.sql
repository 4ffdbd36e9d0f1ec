-- 003: summaries kept on write (sample_sums, score_sums, group_sums), filled here from the existing rows, and the
-- aggregate views re-pointed at them (same columns, same numbers). main_table depends on benchmark_scores and
-- benchmark_scores on group_scores, so they are dropped and created again in order.
DROP VIEW main_table;
DROP VIEW benchmark_scores;
DROP VIEW group_scores;

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

-- fill: the summaries of the rows already stored (`results.summaries.rebuild` runs this part again)
INSERT INTO sample_sums
SELECT run_id, step, benchmark, count(*) FROM samples GROUP BY ALL;

INSERT INTO score_sums
SELECT run_id, step, benchmark, scorer, min(benchmark_version), min(scorer_version), count(*), sum(value),
       count(reward), coalesce(sum(reward), 0)
FROM scores GROUP BY run_id, step, benchmark, scorer;

INSERT INTO group_sums
SELECT run_id, step, benchmark, scorer, grp, count(*), sum(value)
FROM scores WHERE grp IS NOT NULL GROUP BY run_id, step, benchmark, scorer, grp;
