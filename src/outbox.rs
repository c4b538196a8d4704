//! Enqueues the chat side of an event inside the event's transaction: the approval card, the
//! requester's notices and the audit feed. Nothing here talks to a chat API; the worker does.

use crate::chat::Message;
use crate::domain::Platform;
use crate::job::Job;
use crate::store::{Result, Tx, now_ms};

/// Where chat output goes: the configured platforms and their audit channels.
#[derive(Debug, Clone, Default)]
pub struct Destinations {
    /// (platform, audit channel) for each configured platform.
    pub platforms: Vec<(Platform, Option<String>)>,
}

/// Posts `message` to `channel` (a channel id, or a user id for a direct message).
pub async fn post(
    tx: &mut Tx,
    platform: Platform,
    channel: &str,
    request_id: Option<&str>,
    message: &Message,
) -> Result<()> {
    Job::ChatPost {
        platform,
        channel: channel.to_string(),
        request_id: request_id.map(str::to_string),
        message: message.clone(),
    }
    .enqueue(tx, now_ms())
    .await
    .map(drop)
}

/// Tells the requester, on the platform they asked from, by direct message.
pub async fn tell_requester(
    tx: &mut Tx,
    req: &crate::store::RequestRow,
    message: &Message,
) -> Result<()> {
    post(
        tx,
        req.platform,
        &crate::chat::direct_address(req.platform, &req.requester_chat_id),
        Some(&req.id),
        message,
    )
    .await
}

impl Destinations {
    fn configured(&self, platform: Platform) -> bool {
        self.platforms.iter().any(|(p, _)| *p == platform)
    }

    /// Sends `message` to every configured audit channel.
    /// Whether `platform` is configured (so messages can go there).
    pub fn has(&self, platform: Platform) -> bool {
        self.platforms.iter().any(|(p, _)| *p == platform)
    }

    /// Where a direct message reaches someone with these ids, on every configured platform.
    pub fn direct_addresses(
        &self,
        slack: Option<&str>,
        discord: Option<&str>,
    ) -> Vec<(Platform, String)> {
        [(Platform::Slack, slack), (Platform::Discord, discord)]
            .into_iter()
            .filter_map(|(platform, id)| {
                let id = id?;
                self.has(platform)
                    .then(|| (platform, crate::chat::direct_address(platform, id)))
            })
            .collect()
    }

    pub async fn feed(
        &self,
        tx: &mut Tx,
        request_id: Option<&str>,
        message: &Message,
    ) -> Result<()> {
        for (platform, channel) in &self.platforms {
            if let Some(channel) = channel {
                post(tx, *platform, channel, request_id, message).await?;
            }
        }
        Ok(())
    }

    /// Posts the approval card for a new request to the target's approval channels.
    pub async fn post_cards(
        &self,
        tx: &mut Tx,
        request_id: &str,
        channels: &[(Platform, String)],
    ) -> Result<()> {
        for (platform, channel) in channels {
            if self.configured(*platform) {
                Job::ChatCard {
                    platform: *platform,
                    channel: channel.clone(),
                    request_id: request_id.to_string(),
                }
                .enqueue(tx, now_ms())
                .await?;
            }
        }
        Ok(())
    }

    /// Re-renders the request's cards from its current state.
    pub async fn refresh_cards(&self, tx: &mut Tx, request_id: &str) -> Result<()> {
        for (platform, _) in &self.platforms {
            Job::ChatCardUpdate {
                platform: *platform,
                request_id: request_id.to_string(),
            }
            .enqueue(tx, now_ms())
            .await?;
        }
        Ok(())
    }
}
