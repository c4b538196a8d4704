//! The pages people open in a browser (the `from me` link): plain server-rendered HTML, no
//! scripts, no external assets, every value escaped. Served with a strict Content-Security-Policy,
//! no caching and no referrer (the token is in the URL).

use std::net::IpAddr;

use crate::chat::Message;
use crate::domain::GrantDuration;
use crate::store::SourceLink;

/// Headers every page is served with.
pub const HEADERS: [(&str, &str); 5] = [
    ("content-type", "text/html; charset=utf-8"),
    (
        "content-security-policy",
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
    ),
    ("cache-control", "no-store"),
    ("referrer-policy", "no-referrer"),
    ("x-content-type-options", "nosniff"),
];

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · jitbot</title>\
         <style>body{{font:16px/1.5 system-ui,sans-serif;max-width:36rem;margin:3rem auto;padding:0 1rem;color:#1d1d1f}}\
         .addr{{font:600 1.6rem ui-monospace,monospace}}button{{font-size:1rem;padding:.6rem 1.2rem;border-radius:.4rem;border:0;background:#1264a3;color:#fff;cursor:pointer}}\
         .muted{{color:#6e6e73}}</style></head><body>{body}</body></html>\n",
        title = escape(title)
    )
}

/// Asks the person to confirm the address jitbot sees for their request.
pub fn confirm(link: &SourceLink, address: IpAddr) -> String {
    let what = format!(
        "{} port {} for {}",
        link.target,
        link.ports,
        GrantDuration::from_millis(link.duration_ms)
    );
    page(
        "Confirm your address",
        &format!(
            "<h1>Confirm your address</h1>\
             <p>jitbot sees this computer as</p><p class=\"addr\" id=\"address\">{address}</p>\
             <p>Request <strong id=\"what\">{what}</strong> from this address, for {person}?</p>\
             <form method=\"post\"><button type=\"submit\" id=\"confirm\">Request access from {address}</button></form>\
             <p class=\"muted\">Not the computer you will connect from? Close this page and open the link there. \
             The link works once, for 10 minutes.</p>",
            address = escape(&address.to_string()),
            what = escape(&what),
            person = escape(&link.person),
        ),
    )
}

/// What became of the confirmed request: jitbot's answer, as it would have been in chat.
pub fn result(message: &Message) -> String {
    page(
        &message.title,
        &format!(
            "<h1 id=\"title\">{}</h1><p id=\"result\">{}</p>\
             <p class=\"muted\">You can close this page; jitbot tells you in chat what happens next.</p>",
            escape(&message.title),
            escape(&message.plain_text())
        ),
    )
}

/// Step-up approval, signed in: what is being approved, by whom, and the Confirm button (a
/// form that posts the one-time confirm token to `confirm`, next to the callback, so a
/// `public_url` with a path prefix works).
pub fn step_up_confirm(
    request_id: &str,
    what: &str,
    person: &str,
    upn: &str,
    token: &str,
) -> String {
    page(
        "Confirm your approval",
        &format!(
            "<h1>Confirm your approval</h1>\
             <p>Signed in with Microsoft Entra ID as <strong id=\"upn\">{upn}</strong> ({person}).</p>\
             <p>Approve <code id=\"request\">{request_id}</code>: <strong id=\"what\">{what}</strong>?</p>\
             <form method=\"post\" action=\"confirm\"><input type=\"hidden\" name=\"token\" value=\"{token}\">\
             <button type=\"submit\" id=\"confirm\">Approve</button></form>\
             <p class=\"muted\">Not what you meant to approve? Close this page: nothing is approved until you confirm.</p>",
            upn = escape(upn),
            person = escape(person),
            request_id = escape(request_id),
            what = escape(what),
            token = escape(token),
        ),
    )
}

/// A step-up step that was refused: what happened and what to do.
pub fn step_up_refused(text: &str) -> String {
    page(
        "Not approved",
        &format!(
            "<h1 id=\"title\">Not approved</h1><p id=\"result\">{}</p>",
            escape(text)
        ),
    )
}

/// A link that is unknown, used or expired.
pub fn gone() -> String {
    page(
        "Link not valid",
        "<h1>This link is not valid</h1><p id=\"result\">It has expired, was already used, or never \
         existed. Ask again in chat with <code>from me</code>.</p>",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_is_escaped() {
        let link = SourceLink {
            person: "<script>alert(1)</script>".into(),
            platform: "slack".into(),
            user_id: "U1".into(),
            target: "web1\"><img src=x>".into(),
            ports: "22".into(),
            duration_ms: 3_600_000,
            reason: None,
            expires_at: 0,
        };
        let html = confirm(&link, "203.0.113.7".parse().unwrap());
        assert!(
            !html.contains("<script>") && !html.contains("<img"),
            "{html}"
        );
        assert!(html.contains("&lt;script&gt;") && html.contains("web1&quot;&gt;"));
        assert!(html.contains("id=\"address\">203.0.113.7<"));
    }
}
