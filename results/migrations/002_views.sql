-- 002: the aggregations, as views (docs/method.md section 6). They read `scores` alone; `sample_scores` joins in
-- each image's prompt, seed and file for provenance and reports.

-- One row per (image, scorer): everything a number needs to be traced back.
CREATE VIEW sample_scores AS
SELECT s.run_id, s.step, s.benchmark, s.benchmark_version, s.prompt_id, s.prompt_index, s.prompt, s.meta,
       s.grp, s.image_index, s.seed, s.image_sha256, s.image_path,
       c.scorer, c.scorer_version, c.value, c.reward, c.details
FROM samples s
JOIN scores c USING (run_id, step, benchmark, prompt_id, image_index);

-- Per aggregation group (GenEval task, T2I-CompBench category): the mean over its images.
CREATE VIEW group_scores AS
SELECT run_id, step, benchmark, scorer, grp, count(*) AS n_images, avg(value) AS mean
FROM scores
WHERE grp IS NOT NULL
GROUP BY run_id, step, benchmark, scorer, grp;

-- Per (run, step, benchmark, scorer): the image mean, the mean of group means, and the headline `score`
-- (the mean of group means where the benchmark groups its images, else the image mean).
CREATE VIEW benchmark_scores AS
WITH img AS (
    SELECT run_id, step, benchmark, scorer,
           min(benchmark_version) AS benchmark_version, min(scorer_version) AS scorer_version,
           count(*) AS n_images, avg(value) AS image_mean, avg(reward) AS reward_mean
    FROM scores
    GROUP BY run_id, step, benchmark, scorer
), grp AS (
    SELECT run_id, step, benchmark, scorer, count(*) AS n_groups, avg(mean) AS group_mean
    FROM group_scores
    GROUP BY run_id, step, benchmark, scorer
)
SELECT img.run_id, img.step, img.benchmark, img.benchmark_version, img.scorer, img.scorer_version,
       img.n_images, grp.n_groups, img.image_mean, grp.group_mean, img.reward_mean,
       coalesce(grp.group_mean, img.image_mean) AS score
FROM img
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
