//! The Slack group membership table (`slack_groups`, `slack_group_members`): written by the
//! `slack_groups` refresh job, read by handlers at command and click time. Handlers never ask
//! Slack; they trust this table only while it is recent (`crate::policy::GroupMemberships`).

use super::{Result, Store};
use sqlx::Row;
use std::collections::{BTreeMap, BTreeSet};

/// One person's view of the table: when each group was last refreshed, and which groups list them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupTable {
    /// Group id → Unix ms of its last successful refresh.
    pub refreshed_at: BTreeMap<String, i64>,
    /// Groups whose last refresh listed the user.
    pub member_of: BTreeSet<String>,
}

impl Store {
    /// Replaces `group`'s members with `users` and stamps it refreshed at `now`, in one
    /// transaction (a reader sees the old list or the new one, never half).
    pub async fn replace_group_members(
        &self,
        group: &str,
        users: &[String],
        now: i64,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM slack_group_members WHERE group_id = $1")
            .bind(group)
            .execute(tx.conn())
            .await?;
        let unique: BTreeSet<&String> = users.iter().collect();
        for user in unique {
            sqlx::query("INSERT INTO slack_group_members (group_id, user_id) VALUES ($1, $2)")
                .bind(group)
                .bind(user)
                .execute(tx.conn())
                .await?;
        }
        sqlx::query(
            "INSERT INTO slack_groups (group_id, refreshed_at) VALUES ($1, $2)
             ON CONFLICT (group_id) DO UPDATE SET refreshed_at = excluded.refreshed_at",
        )
        .bind(group)
        .bind(now)
        .execute(tx.conn())
        .await?;
        tx.commit().await
    }

    /// What the table says about Slack user `user_id`.
    pub async fn group_table(&self, user_id: &str) -> Result<GroupTable> {
        let mut table = GroupTable::default();
        for row in sqlx::query("SELECT group_id, refreshed_at FROM slack_groups")
            .fetch_all(self.pool())
            .await?
        {
            table
                .refreshed_at
                .insert(row.try_get("group_id")?, row.try_get("refreshed_at")?);
        }
        for row in sqlx::query("SELECT group_id FROM slack_group_members WHERE user_id = $1")
            .bind(user_id)
            .fetch_all(self.pool())
            .await?
        {
            table.member_of.insert(row.try_get("group_id")?);
        }
        Ok(table)
    }
}
