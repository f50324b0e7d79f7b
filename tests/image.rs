//! The image `make image` builds, as a user gets it: an OCI archive that holds one static
//! binary, run as 65532, under 20 MB; and that binary, alone in an empty root as 65532,
//! syncs a BasetenSecret over HTTPS with the real control plane and the emulator.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::operator::{Harness, OperatorOptions};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const BINARY: &str = "baseten-secrets-operator";
const LIMIT_BYTES: u64 = 20 * 1024 * 1024;

fn archive() -> PathBuf {
    let archive = common::manifests::repo().join("target/image/baseten-secrets-operator.tar");
    assert!(
        archive.is_file(),
        "{} is missing: `make image` builds it (`make test` does first)",
        archive.display()
    );
    archive
}

fn run(command: &mut Command) -> String {
    let out = command.output().expect("run");
    assert!(out.status.success(), "{command:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// The archive unpacked into a fresh folder.
fn unpacked() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    run(Command::new("tar")
        .arg("-xf")
        .arg(archive())
        .arg("-C")
        .arg(dir.path()));
    dir
}

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// Blob `digest` of the layout in `dir`, checked against its digest.
fn blob(dir: &Path, digest: &str) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
    let data = std::fs::read(dir.join("blobs/sha256").join(hex)).unwrap();
    assert_eq!(sha256(&data), digest, "blob content matches its digest");
    data
}

fn json_blob(dir: &Path, digest: &str) -> Value {
    serde_json::from_slice(&blob(dir, digest)).unwrap()
}

/// Whether an ELF file asks for a program interpreter (a dynamic loader and libraries).
fn dynamically_linked(elf: &[u8]) -> bool {
    assert_eq!(&elf[..5], b"\x7fELF\x02", "a 64-bit ELF file");
    let u16_at = |at: usize| u16::from_le_bytes([elf[at], elf[at + 1]]) as usize;
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap()) as usize;
    let (entry_size, entries) = (u16_at(0x36), u16_at(0x38));
    const PT_INTERP: u32 = 3;
    (0..entries).any(|i| {
        let at = phoff + i * entry_size;
        u32::from_le_bytes(elf[at..at + 4].try_into().unwrap()) == PT_INTERP
    })
}

#[test]
fn the_image_is_one_static_binary_run_as_65532_under_20_mb() {
    let size = std::fs::metadata(archive()).unwrap().len();
    let layout = unpacked();
    let dir = layout.path();
    let index: Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 1, "{index}");
    let manifest = json_blob(dir, manifests[0]["digest"].as_str().unwrap());
    let config = json_blob(dir, manifest["config"]["digest"].as_str().unwrap());
    assert_eq!(config["config"]["User"], "65532:65532", "{config}");
    assert_eq!(
        config["config"]["Entrypoint"],
        json!([format!("/{BINARY}")])
    );
    assert_eq!(config["os"], "linux");

    // One layer, holding the binary and nothing else: no shell, no libraries.
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1, "{manifest}");
    let layer = blob(dir, layers[0]["digest"].as_str().unwrap());
    std::fs::write(dir.join("layer.tar.gz"), &layer).unwrap();
    let listing = run(Command::new("tar")
        .arg("-tvzf")
        .arg(dir.join("layer.tar.gz")));
    let entries: Vec<&str> = listing.lines().collect();
    assert_eq!(entries.len(), 1, "{listing}");
    assert!(entries[0].starts_with("-rwxr-xr-x") && entries[0].ends_with(BINARY));
    let root = dir.join("root");
    std::fs::create_dir(&root).unwrap();
    run(Command::new("tar")
        .arg("-xzf")
        .arg(dir.join("layer.tar.gz"))
        .arg("-C")
        .arg(&root));
    let binary = std::fs::read(root.join(BINARY)).unwrap();
    let diff_id = Command::new("gzip")
        .arg("-dc")
        .arg(dir.join("layer.tar.gz"))
        .output()
        .unwrap()
        .stdout;
    assert_eq!(config["rootfs"]["diff_ids"], json!([sha256(&diff_id)]));
    assert!(!dynamically_linked(&binary), "the binary needs a loader");

    // Docker's manifest.json, beside the OCI layout, names the same config and layer.
    let docker: Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    let hex = |d: &Value| d.as_str().unwrap().replace("sha256:", "blobs/sha256/");
    assert_eq!(
        docker[0]["Config"].as_str(),
        Some(hex(&manifest["config"]["digest"]).as_str())
    );
    assert_eq!(
        docker[0]["Layers"][0].as_str(),
        Some(hex(&layers[0]["digest"]).as_str())
    );

    assert!(size < LIMIT_BYTES, "the image is {size} bytes");
    eprintln!(
        "image: {size} bytes ({:.1} MB); binary {:.1} MB unpacked",
        size as f64 / 1e6,
        binary.len() as f64 / 1e6
    );
}

#[tokio::test]
async fn the_image_binary_alone_in_an_empty_root_syncs_over_https() {
    if !run(Command::new("id").arg("-u")).trim().eq("0") {
        eprintln!("not root: chroot needs root (CI has it); the image's binary was not run");
        return;
    }
    let layout = unpacked();
    let root = layout.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let layout_dir = layout.path();
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout_dir.join("index.json")).unwrap()).unwrap();
    let manifest = json_blob(
        layout_dir,
        index["manifests"][0]["digest"].as_str().unwrap(),
    );
    let layer = manifest["layers"][0]["digest"].as_str().unwrap();
    let layer = layout_dir
        .join("blobs/sha256")
        .join(&layer["sha256:".len()..]);
    run(Command::new("tar")
        .arg("-xzf")
        .arg(&layer)
        .arg("-C")
        .arg(&root));

    // The process sees only the image's root: the binary, and the files a Pod would mount
    // (its kubeconfig standing in for the ServiceAccount, the CA of the emulator's HTTPS).
    let mut h = Harness::start_with(
        "image",
        OperatorOptions {
            tls: true,
            trust_test_ca: true,
            start: false,
            command: Some(vec![
                "chroot".into(),
                "--userspec=65532:65532".into(),
                root.display().to_string(),
                format!("/{BINARY}"),
            ]),
            ..Default::default()
        },
    )
    .await;
    let mounted = root.join(h.dir().strip_prefix("/").unwrap());
    std::fs::create_dir_all(&mounted).unwrap();
    for file in ["operator.kubeconfig", "ca.pem"] {
        std::fs::copy(h.dir().join(file), mounted.join(file)).unwrap();
    }
    run(Command::new("chown")
        .arg("-R")
        .arg("65532:65532")
        .arg(&mounted));
    assert_eq!(
        std::fs::read_dir(&root).unwrap().count(),
        2,
        "the root holds the binary and the mounted folder only"
    );
    h.start_operator();

    h.apply_secret("creds", &[("token", b"from the image")], json!({}))
        .await;
    h.synced("from-image", "creds", "token", b"from the image")
        .await;
    h.apply_secret("creds", &[("token", b"rotated")], json!({}))
        .await;
    h.wait_baseten("from-image", "the rotation", |s| s.value == "rotated")
        .await;
    // The operator ran as 65532 with nothing else in its root.
    let pid = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            let root_link = std::fs::read_link(format!("/proc/{pid}/root")).ok();
            root_link.as_deref() == Some(root.as_path())
        })
        .expect("the operator's process, rooted in the image");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(
        uid.split_whitespace().skip(1).all(|id| id == "65532"),
        "{uid}"
    );
}
