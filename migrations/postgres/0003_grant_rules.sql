-- Every NSG a grant's rule is opened in, in evaluation order (a VM's subnet NSG, then its NIC
-- NSG), with the priority the rule got there: JSON `[{"nsg": "...", "priority": 123}]`.
-- NULL on rows from before this migration: their one rule is in `nsg` at `rule_priority`, which
-- keep being written (the first NSG of the path) for tools that read them.
ALTER TABLE requests ADD COLUMN rules TEXT;
