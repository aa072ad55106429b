-- The DN index also carries the connector and the state: a sync resolves every reference value
-- (member, manager) by normalized DN to a present object of the same connector, and with the
-- old index each hit read the object's row (its attributes' pages) only to check those two.
DROP INDEX cs_objects_dn;
CREATE INDEX cs_objects_dn ON cs_objects (dn_norm, connector_id, state);
