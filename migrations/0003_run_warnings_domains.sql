-- Warnings in run history: per-object entries that are not errors (a UPN rewritten to the
-- tenant's initial domain, a duplicate value set aside, an export retried after throttling).
-- They are listed with the run's errors but neither count towards the error limit nor make
-- the object be retried.
ALTER TABLE runs ADD COLUMN warnings INTEGER NOT NULL DEFAULT 0;
ALTER TABLE run_errors ADD COLUMN level TEXT NOT NULL DEFAULT 'error';

-- The tenant's domains that a cloud connector imports (object class `domain`): the engine reads
-- them at the start of every sync to rewrite UPNs whose suffix the tenant has not verified.
CREATE INDEX cs_objects_domains ON cs_objects (connector_id) WHERE object_class = 'domain';
