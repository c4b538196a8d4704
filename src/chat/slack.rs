//! Slack adapter (owned by the Slack work).
