-- Until PostgreSQL has statistics for leads, the duplicate lookup (phone OR
-- e-mail) is planned as a sequential scan, once per request. Autovacuum's
-- default waits for 10 % of the table to change before analysing it again;
-- a growing lead table is re-analysed much sooner with these.
ALTER TABLE leads SET (
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_analyze_threshold = 200
);
