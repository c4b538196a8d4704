//! What Discord sends to jitbot's interactions endpoint when a member uses `/jit`, types into an
//! autocompleted option or clicks a button: bodies in the shapes of
//! `shared/reference/vectors/discord_*.json`, signed with Ed25519 like Discord signs them.
//! Discord publishes no test key, so tests use RFC 8032's test 1 key ([`TEST_SEED`]).

use ed25519_dalek::{Signer, SigningKey};
use serde_json::{Value, json};
use std::sync::atomic::{AtomicU64, Ordering};

/// A fresh interaction id and token, as Discord gives every interaction its own: two identical
/// commands are two signed requests with different bodies, never a replay of one.
fn interaction_id() -> (String, String) {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let n = 1_218_321_500_000_000_010u64 + NEXT.fetch_add(1, Ordering::Relaxed);
    (
        n.to_string(),
        format!("aW50ZXJhY3Rpb246{n}{:016x}", rand::random::<u64>()),
    )
}

/// RFC 8032 test 1 secret seed.
pub const TEST_SEED: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
/// RFC 8032 test 1 public key (what `discord.public_key` is set to in tests).
pub const TEST_PUBLIC_KEY: &str =
    "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
pub const APPLICATION_ID: &str = "1216441490306502796";
pub const GUILD_ID: &str = "290926798626357999";

/// Signs `timestamp + body` with the secret seed (hex); returns the hex signature.
pub fn sign(seed_hex: &str, timestamp: &str, body: &[u8]) -> String {
    let seed: [u8; 32] = hex::decode(seed_hex)
        .ok()
        .and_then(|b| b.try_into().ok())
        .unwrap_or([0; 32]);
    let key = SigningKey::from_bytes(&seed);
    let mut msg = timestamp.as_bytes().to_vec();
    msg.extend_from_slice(body);
    hex::encode(key.sign(&msg).to_bytes())
}

/// A guild member: `member.user` and `member.roles`.
fn member(user_id: &str, roles: &[&str]) -> Value {
    json!({
        "avatar": null, "banner": null, "communication_disabled_until": null, "deaf": false,
        "flags": 0, "joined_at": "2019-05-01T10:00:00.000000+00:00", "mute": false, "nick": null,
        "pending": false, "permissions": "2248473465835073", "premium_since": null,
        "roles": roles,
        "user": { "avatar": null, "avatar_decoration_data": null, "discriminator": "0",
                  "global_name": format!("Member {user_id}"), "id": user_id, "public_flags": 0,
                  "username": format!("member{user_id}") }
    })
}

fn envelope(kind: u8, user_id: &str, roles: &[&str], channel_id: &str, data: Value) -> Value {
    let (id, token) = interaction_id();
    json!({
        "app_permissions": "2248473465835073",
        "application_id": APPLICATION_ID,
        "attachment_size_limit": 10485760,
        "authorizing_integration_owners": { "0": GUILD_ID },
        "channel": { "flags": 0, "guild_id": GUILD_ID, "id": channel_id, "last_message_id": null,
                     "name": "ops", "nsfw": false, "parent_id": null, "permissions": "2248473465835073",
                     "position": 3, "rate_limit_per_user": 0, "topic": null, "type": 0 },
        "channel_id": channel_id,
        "context": 0,
        "data": data,
        "entitlements": [],
        "guild": { "features": [], "id": GUILD_ID, "locale": "en-US" },
        "guild_id": GUILD_ID,
        "guild_locale": "en-US",
        "id": id,
        "locale": "en-US",
        "member": member(user_id, roles),
        "token": token,
        "type": kind,
        "version": 1
    })
}

/// PING (type 1), as Discord sends it when the endpoint URL is saved.
pub fn ping() -> String {
    let (id, token) = interaction_id();
    json!({"app_permissions":"180224","application_id":APPLICATION_ID,"authorizing_integration_owners":{},
        "entitlements":[],"id":id,"token":token,"type":1,
        "user":{"avatar":null,"avatar_decoration_data":null,"bot":true,"discriminator":"0000",
        "global_name":"Discord","id":"643945264868098049","public_flags":1,"system":true,"username":"discord"},
        "version":1})
    .to_string()
}

/// A string option.
pub fn opt(name: &str, value: &str) -> Value {
    json!({ "name": name, "type": 3, "value": value })
}

/// `/jit <sub> options…` (type 2) from a guild member with `roles`.
pub fn command(user_id: &str, roles: &[&str], sub: &str, options: Vec<Value>) -> String {
    let data = json!({
        "id": "1218320000000000001", "name": "jit", "type": 1, "guild_id": GUILD_ID,
        "options": [{ "name": sub, "type": 1, "options": options }]
    });
    envelope(2, user_id, roles, "645027906669510667", data).to_string()
}

/// `/jit request target:… ports:… duration:…` (+ optional source and reason).
pub fn request(user_id: &str, roles: &[&str], target: &str, ports: &str, duration: &str) -> String {
    command(
        user_id,
        roles,
        "request",
        vec![
            opt("target", target),
            opt("ports", ports),
            opt("duration", duration),
        ],
    )
}

/// Autocomplete (type 4) while typing `value` into `/jit request target:`.
pub fn autocomplete(user_id: &str, roles: &[&str], value: &str) -> String {
    let data = json!({
        "id": "1218320000000000001", "name": "jit", "type": 1, "guild_id": GUILD_ID,
        "options": [{ "name": "request", "type": 1, "options": [
            { "name": "target", "type": 3, "value": value, "focused": true }
        ]}]
    });
    envelope(4, user_id, roles, "645027906669510667", data).to_string()
}

/// A button click (type 3) on message `message_id` in `channel_id`.
pub fn button(
    user_id: &str,
    roles: &[&str],
    channel_id: &str,
    message_id: &str,
    custom_id: &str,
) -> String {
    let mut v = envelope(
        3,
        user_id,
        roles,
        channel_id,
        json!({ "component_type": 2, "custom_id": custom_id, "id": 2 }),
    );
    v["message"] = json!({
        "application_id": APPLICATION_ID, "attachments": [],
        "author": { "avatar": null, "bot": true, "discriminator": "0", "global_name": null,
                    "id": APPLICATION_ID, "public_flags": 524288, "username": "jitbot" },
        "channel_id": channel_id, "components": [], "content": "", "edited_timestamp": null,
        "embeds": [], "flags": 0, "id": message_id, "mention_everyone": false,
        "mention_roles": [], "mentions": [], "pinned": false,
        "timestamp": "2024-03-15T12:00:00.000000+00:00", "tts": false, "type": 0
    });
    v.to_string()
}

/// Posts `body` to `url`, signed with `seed_hex` at `timestamp`, as Discord does.
pub async fn send_at(
    client: &reqwest::Client,
    url: &str,
    seed_hex: &str,
    body: &str,
    timestamp: i64,
) -> reqwest::Result<reqwest::Response> {
    let ts = timestamp.to_string();
    client
        .post(url)
        .header("content-type", "application/json")
        .header("x-signature-ed25519", sign(seed_hex, &ts, body.as_bytes()))
        .header("x-signature-timestamp", ts)
        .body(body.to_string())
        .send()
        .await
}

/// Posts `body` to `url`, signed now with the RFC 8032 test key.
pub async fn send(
    client: &reqwest::Client,
    url: &str,
    body: &str,
) -> reqwest::Result<reqwest::Response> {
    send_at(client, url, TEST_SEED, body, chrono::Utc::now().timestamp()).await
}

/// A choice in a string select menu (type 3, `component_type` 3) on message `message_id`.
pub fn select(
    user_id: &str,
    roles: &[&str],
    channel_id: &str,
    message_id: &str,
    custom_id: &str,
    values: &[&str],
) -> String {
    let mut v: Value =
        serde_json::from_str(&button(user_id, roles, channel_id, message_id, custom_id))
            .unwrap_or_default();
    v["data"] = json!({ "component_type": 3, "custom_id": custom_id, "values": values });
    v.to_string()
}

/// A submitted modal (type 5): each `(custom_id, value)` is a text input in its own row, as
/// Discord sends them.
pub fn modal_submit(
    user_id: &str,
    roles: &[&str],
    custom_id: &str,
    inputs: &[(&str, &str)],
) -> String {
    let rows: Vec<Value> = inputs
        .iter()
        .map(|(id, value)| json!({ "type": 1, "components": [{ "type": 4, "custom_id": id, "value": value }] }))
        .collect();
    let data = json!({ "custom_id": custom_id, "components": rows });
    envelope(5, user_id, roles, "645027906669510667", data).to_string()
}
