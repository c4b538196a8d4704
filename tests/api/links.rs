//! `from me`: the one-time link that shows a person the address jitbot sees and makes the
//! request from it once they confirm. Driven over HTTP here (the browser test is `browser.rs`).

use crate::helpers::*;
use jitbot::domain::Status;

const PUBLIC: &str = "https://jitbot.example.com/";

/// jitbot behind a proxy on loopback: its `X-Forwarded-For` is believed.
async fn spawn_linked_app() -> TestApp {
    spawn_app_tuned(
        "",
        &[(
            "[database]",
            &format!("[server]\npublic_url = \"{PUBLIC}\"\ntrusted_proxies = [\"127.0.0.0/8\"]\n\n[database]"),
        )],
        "",
    )
    .await
}

/// The `/ip/<token>` path in jitbot's answer.
pub fn link_path(reply: &str) -> String {
    let at = reply
        .find(PUBLIC)
        .unwrap_or_else(|| panic!("no link in {reply}"))
        + PUBLIC.len()
        - 1;
    reply[at..].split_whitespace().next().unwrap().to_string()
}

async fn open(app: &TestApp, path: &str, post: bool, client: &str) -> (u16, String) {
    let url = format!("{}{path}", app.base);
    let req = if post {
        app.http.post(url)
    } else {
        app.http.get(url)
    };
    let resp = req.header("x-forwarded-for", client).send().await.unwrap();
    let status = resp.status().as_u16();
    let csp = resp.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    (status, resp.text().await.unwrap())
}

backends! {
#[tokio::test]
async fn a_link_shows_the_address_jitbot_sees_and_makes_the_request_once_confirmed() {
    let app = spawn_linked_app().await;
    let reply = app.slash(STEVE, "web1 22 1h from me deploy").await;
    assert!(reply.contains("from the computer you will connect from"), "{reply}");
    let path = link_path(&reply);
    assert_eq!(path.len(), "/ip/".len() + 64, "{path}");
    assert!(app.events_of("source_link_issued").await.len() == 1);
    assert!(!app.events_of("source_link_issued").await[0].detail.to_string().contains(&path[4..]), "the token is never recorded");

    let (status, page) = open(&app, &path, false, "203.0.113.77").await;
    assert_eq!(status, 200);
    assert!(page.contains("id=\"address\">203.0.113.77<") && page.contains("web1 port 22 for 1h"), "{page}");
    // Opening it does not use it up; confirming does, from the address seen then.
    let (status, page) = open(&app, &path, true, "203.0.113.78").await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("Request submitted"), "{page}");
    let id = request_id_in(&page);
    let req = app.request(&id).await;
    assert_eq!((req.source.as_str(), req.status), ("203.0.113.78/32", Status::Pending));
    assert_eq!(req.reason.as_deref(), Some("deploy"));
    app.wait_until("the card", std::time::Duration::from_secs(5), |a| {
        a.card_text(&id).contains("203.0.113.78")
    })
    .await;

    // Used: gone, for the page and for a second confirmation.
    assert_eq!(open(&app, &path, false, "203.0.113.78").await.0, 404);
    assert_eq!(open(&app, &path, true, "203.0.113.78").await.0, 404);
    assert_eq!(open(&app, "/ip/0000", true, "203.0.113.78").await.0, 404);
}

#[tokio::test]
async fn a_link_is_refused_up_front_or_at_confirmation_by_the_same_policy() {
    let app = spawn_linked_app().await;
    // Everything but the address is checked before a link is issued.
    let reply = app.slash(STEVE, "web1 23 1h from me").await;
    assert!(reply.contains("not allowed") && !reply.contains(PUBLIC), "{reply}");
    // The address is checked when confirmed.
    let path = link_path(&app.slash(STEVE, "web1 22 1h from me").await);
    let (_, page) = open(&app, &path, true, "192.0.2.1").await;
    assert!(page.contains("192.0.2.1/32 is outside web1"), "{page}");
    // An expired link is gone.
    let path = link_path(&app.slash(STEVE, "web1 22 1h from me").await);
    sqlx::query("UPDATE source_links SET expires_at = 0")
        .execute(&app.sql)
        .await
        .unwrap();
    assert_eq!(open(&app, &path, false, "203.0.113.77").await.0, 404);
    assert_eq!(open(&app, &path, true, "203.0.113.77").await.0, 404);
    assert!(app.events_of("requested").await.is_empty());
}

#[tokio::test]
async fn without_a_public_url_from_me_says_what_to_do_instead() {
    let app = spawn_app().await;
    let reply = app.slash(STEVE, "web1 22 1h from me").await;
    assert!(reply.contains("server.public_url") && reply.contains("from <ip>"), "{reply}");
}
}
