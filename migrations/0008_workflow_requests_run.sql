-- Each sync and cycle counts the notification requests its runs made (`requests_of_runs`): without
-- an index on the run, that count read the whole request history, which only grows while the
-- service runs.
CREATE INDEX workflow_requests_run ON workflow_requests (run_id);
