//! Azure (owned by the Azure work).
