//! Processes started by testenv die with the process that started them, even when that
//! process exits without running any destructor (as a test binary does with its statics).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use testenv::Supervised;

const CHILD_MODE: &str = "TESTENV_WATCHDOG_CHILD";

fn processes_with_cmdline(wanted: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|bytes| String::from_utf8_lossy(&bytes).replace('\0', " ").trim() == wanted)
                .unwrap_or(false)
        })
        .collect()
}

#[test]
fn a_supervised_child_dies_when_its_starter_exits_abruptly() {
    if let Ok(seconds) = std::env::var(CHILD_MODE) {
        // The starter: launch a long sleep under the watchdog, then exit at once, skipping
        // every destructor, as a crashing or finishing test binary would.
        let dir = tempfile::tempdir().unwrap();
        let child = Supervised::spawn(
            Path::new("sleep"),
            std::slice::from_ref(&seconds),
            &dir.path().join("sleep.log"),
            None,
        )
        .unwrap();
        std::mem::forget(child);
        let wanted = format!("sleep {seconds}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while processes_with_cmdline(&wanted).is_empty() {
            assert!(
                Instant::now() < deadline,
                "the supervised sleep never started"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        std::process::exit(3);
    }

    let seconds = format!("{}", 3000 + rand::random::<u32>() % 1000);
    let wanted = format!("sleep {seconds}");
    let status = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_supervised_child_dies_when_its_starter_exits_abruptly",
            "--nocapture",
        ])
        .env(CHILD_MODE, &seconds)
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(3), "the starter ran in child mode");

    let deadline = Instant::now() + Duration::from_secs(15);
    while !processes_with_cmdline(&wanted).is_empty() {
        assert!(
            Instant::now() < deadline,
            "`{wanted}` outlived its starter by 15 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
