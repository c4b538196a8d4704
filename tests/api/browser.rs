//! The `from me` page in a real headless Chromium (Debian's `chromium` and `chromium-driver`,
//! installed by `.ci/run`): the person sees the address jitbot sees, confirms, and the request is
//! made from it; the link then no longer works. Skipped when chromedriver is not installed,
//! unless `JITBOT_TEST_REQUIRE_BROWSER=1` (CI), which makes that a failure.

use crate::helpers::*;
use fantoccini::{ClientBuilder, Locator};
use std::time::{Duration, Instant};
use tokio::process::Command;

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

/// chromedriver on a free port, killed when dropped; `None` when it is not installed.
pub async fn chromedriver() -> Option<(tokio::process::Child, String)> {
    if !std::path::Path::new(CHROMEDRIVER).exists() {
        assert!(
            std::env::var("JITBOT_TEST_REQUIRE_BROWSER").as_deref() != Ok("1"),
            "JITBOT_TEST_REQUIRE_BROWSER=1 but {CHROMEDRIVER} is missing (apt-get install chromium chromium-driver)"
        );
        eprintln!("SKIPPED: {CHROMEDRIVER} not installed");
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "chromedriver did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Some((child, url))
}

pub async fn browser(driver: &str, profile: &std::path::Path) -> fantoccini::Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": CHROMIUM,
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--disable-quic", "--disable-background-networking", "--disable-component-update",
                     "--disable-sync", "--no-first-run", format!("--user-data-dir={}", profile.display())],
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(driver)
        .await
        .expect("a Chromium session")
}

#[tokio::test]
async fn the_from_me_page_in_chromium_shows_the_address_and_makes_the_request() {
    let Some((_driver, driver_url)) = chromedriver().await else {
        return;
    };
    // `lab` admits loopback, where the browser connects from.
    let lab = format!(
        "[targets.lab]\nnsg = \"{NSG}\"\ndestination = \"10.0.9.4\"\nports = [22]\nmax_duration = \"1h\"\n\
         allowed_sources = [\"127.0.0.0/8\"]\nrequesters = [\"steve\"]\napprovers = [\"group:secops\"]\n\
         approval_channel.slack = \"{APPROVALS}\"\npriority_range = [300, 399]\n"
    );
    let app = spawn_app_tuned(
        "",
        &[(
            "[database]",
            "[server]\npublic_url = \"https://jitbot.example.com/\"\n\n[database]",
        )],
        &lab,
    )
    .await;
    let reply = app.slash(STEVE, "lab 22 30m from me").await;
    let path = crate::links::link_path(&reply);
    let profile = tempfile::tempdir().unwrap();
    let c = browser(&driver_url, profile.path()).await;
    let url = format!("{}{path}", app.base);
    c.goto(&url).await.unwrap();
    let address = c
        .find(Locator::Id("address"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(address, "127.0.0.1");
    let what = c
        .find(Locator::Id("what"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(what, "lab port 22 for 30m");
    if let Ok(dir) = std::env::var("JITBOT_SCREENSHOT_DIR") {
        let png = c.screenshot().await.unwrap();
        std::fs::write(std::path::Path::new(&dir).join("from-me.png"), png).unwrap();
    }
    c.find(Locator::Id("confirm"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let result = c
        .wait()
        .at_most(Duration::from_secs(5))
        .for_element(Locator::Id("result"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        result.contains("lab port 22 from 127.0.0.1/32 for 30m"),
        "{result}"
    );
    let id = request_id_in(&result);
    assert_eq!(app.request(&id).await.source, "127.0.0.1/32");
    // The link worked once.
    c.goto(&url).await.unwrap();
    let again = c
        .find(Locator::Id("result"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(again.contains("expired, was already used"), "{again}");
    c.close().await.unwrap();
}
