-- Every NSG a grant's rule is opened in, in evaluation order (a VM's subnet NSG, then its NIC
-- NSG), with the priority the rule got there: JSON `[{"nsg": "...", "priority": 123}]`.
-- NULL on rows from before this migration: their one rule is in `nsg` at `rule_priority`, which
-- keep being written (the first NSG of the path) for tools that read them.
ALTER TABLE requests ADD COLUMN rules TEXT;

-- Where each `vm` target was last found (its private address and the NSGs on its path), or why it
-- could not be: JSON `{"nsgs": [...], "destination": "10.0.1.4"}` or `{"error": "..."}`. Written by
-- the resolve job (one replica at a time, compare-and-swap on `resolved`), read by every replica.
CREATE TABLE target_paths (
    target      TEXT PRIMARY KEY,
    resolved    TEXT NOT NULL,
    checked_at  BIGINT NOT NULL
);
