-- mv_objects.provenance is now written compact: `[contributions, {attribute: index}]`, each
-- contribution (rule, connector, anchor, precedence) once instead of once per attribute.
-- Rows in the earlier form (`{attribute: contribution}`) are still read and are rewritten compact
-- when their object next changes. No rows change here: this migration marks the format, so
-- that a syncctl older than it refuses the database ("migration 6 was previously applied but is
-- missing") instead of misreading the new rows.
UPDATE counters SET value = value WHERE name = 'change_seq';
