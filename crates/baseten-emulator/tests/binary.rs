//! The `baseten-emulator` binary: flags, the printed address, and a working API behind it.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

/// Kills the emulator even when an assertion fails, so no process outlives the test.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn prints_its_address_and_serves_the_configured_keys_and_teams() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let child = Command::new(env!("CARGO_BIN_EXE_baseten-emulator"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--api-key",
            "bin-key",
            "--team",
            "Research",
            "--rate-limit",
            "2",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line.trim().rsplit(' ').next().unwrap().to_string();
    assert!(url.starts_with("http://127.0.0.1:"), "{line}");

    let http = reqwest::Client::new();
    let teams: serde_json::Value = http
        .get(format!("{url}/v1/teams"))
        .header("Authorization", "Bearer bin-key")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = teams["teams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Default Team", "Research"]);
    let statuses: Vec<u16> = futures::future::join_all((0..6).map(|_| {
        http.get(format!("{url}/v1/teams"))
            .header("Authorization", "Api-Key bin-key")
            .send()
    }))
    .await
    .into_iter()
    .map(|r| r.unwrap().status().as_u16())
    .collect();
    assert!(
        statuses.contains(&429),
        "--rate-limit 2 throttles: {statuses:?}"
    );
    let denied = http
        .get(format!("{url}/v1/teams"))
        .header("Authorization", "Api-Key other")
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status().as_u16(), 401);
}
