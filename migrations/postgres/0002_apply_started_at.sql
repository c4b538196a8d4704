-- When the first PUT of a grant's rule may have been sent (Unix ms): from then on the rule could be
-- open, so the grant's expiry counts from here even if jitbot crashes before recording the PUT.
ALTER TABLE requests ADD COLUMN apply_started_at BIGINT;
-- Requests already applying when this runs: their PUT may have been sent since they last changed.
UPDATE requests SET apply_started_at = updated_at WHERE status = 'applying';
