//! `appliance flash` onto regular files and real loop devices (as root):
//! decompression, read-back verification, an injected corruption, and every
//! refusal, each leaving the target as the message says.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::support::{appliance, assert_contains, in_ci, require_tool, stderr, stdout};

/// What `images` writes: the raw image, its zstd-compressed copy, and the
/// image's bytes.
type Images = (PathBuf, PathBuf, Vec<u8>);

/// A random image of `size` bytes and its zstd-compressed copy.
fn images(dir: &Path, size: usize) -> Images {
    let mut bytes = vec![0u8; size];
    getrandom::fill(&mut bytes).unwrap();
    // Some structure, like a real image: zeroed stretches compress.
    bytes[size / 4..size / 2].fill(0);
    let raw = dir.join("disk.img");
    std::fs::write(&raw, &bytes).unwrap();
    let compressed = dir.join("disk.img.zst");
    std::fs::write(&compressed, zstd::encode_all(&bytes[..], 3).unwrap()).unwrap();
    (raw, compressed, bytes)
}

fn flash(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = appliance();
    command.arg("flash").args(args).stdin(Stdio::null());
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().unwrap()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `appliance flash` of `image` onto the regular file `target`, confirmed.
fn flash_to_file(image: &Path, target: &Path, env: &[(&str, &str)]) -> Output {
    flash(
        &[
            "--image",
            path(image),
            "--device",
            path(target),
            "--force-file",
            "--yes",
        ],
        env,
    )
}

fn assert_holds(target: &Path, bytes: &[u8]) {
    assert!(
        std::fs::read(target).unwrap() == bytes,
        "the file differs from the image"
    );
}

#[test]
fn a_compressed_image_lands_in_a_file_verified() {
    let dir = tempfile::tempdir().unwrap();
    let (_, compressed, bytes) = images(dir.path(), 3 << 20);
    let target = dir.path().join("out.img");
    let output = flash_to_file(&compressed, &target, &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_holds(&target, &bytes);
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
    assert!(
        stdout(&output).ends_with(&format!(
            "(3.0 MiB) to {} and read it back: sha256 {sha}\n",
            target.display()
        )),
        "{}",
        stdout(&output)
    );
    // Not a terminal: plain lines for each stage.
    assert_contains(stderr(&output), "writing 3.0 MiB\n");
    assert_contains(stderr(&output), "verifying 3.0 MiB\n");
    assert_contains(stderr(&output), "writing 100% (3.0 MiB of 3.0 MiB)\n");
}

#[test]
fn a_zst_of_several_frames_is_written_whole() {
    // Concatenated zstd frames are one valid stream; only the first frame's
    // size is in its header.
    let dir = tempfile::tempdir().unwrap();
    let (_, first, mut bytes) = images(dir.path(), 1 << 20);
    let mut second_bytes = vec![0u8; 1 << 19];
    getrandom::fill(&mut second_bytes).unwrap();
    let mut stream = std::fs::read(&first).unwrap();
    stream.extend(zstd::encode_all(&second_bytes[..], 3).unwrap());
    let image = dir.path().join("two-frames.img.zst");
    std::fs::write(&image, stream).unwrap();
    bytes.extend(&second_bytes);
    let target = dir.path().join("out.img");
    let output = flash_to_file(&image, &target, &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_holds(&target, &bytes);
    assert_contains(stdout(&output), "(1.5 MiB) to ");
}

#[test]
fn a_build_result_directory_is_searched_for_its_image() {
    let dir = tempfile::tempdir().unwrap();
    let result = dir.path().join("result-pi/sd-image");
    std::fs::create_dir_all(&result).unwrap();
    let (_, compressed, bytes) = images(dir.path(), 1 << 20);
    std::fs::rename(&compressed, result.join("nixos-image-sd-card.img.zst")).unwrap();
    let target = dir.path().join("out.img");
    let output = flash_to_file(&dir.path().join("result-pi"), &target, &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_holds(&target, &bytes);
}

#[test]
fn a_flipped_byte_is_caught_by_verification() {
    let dir = tempfile::tempdir().unwrap();
    let (raw, _, bytes) = images(dir.path(), 2 << 20);
    let target = dir.path().join("out.img");
    let output = flash_to_file(&raw, &target, &[("APPLIANCE_TEST_FLASH_CORRUPT_AT", "1234567")]);
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert_contains(&err, "error: verification failed: `");
    assert_contains(&err, "holds a damaged copy of the image: do not boot it");
    // The device really holds the flipped byte, nothing else differs.
    let written = std::fs::read(&target).unwrap();
    let differing: Vec<usize> = (0..bytes.len()).filter(|&i| written[i] != bytes[i]).collect();
    assert_eq!(differing, [1234567]);
}

#[test]
fn refusals_write_nothing_and_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let (raw, _, _) = images(dir.path(), 1 << 20);
    let target = dir.path().join("existing.img");
    std::fs::write(&target, b"old contents").unwrap();
    let check = |args: &[&str], expected: &str| {
        let output = flash(args, &[]);
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        let err = stderr(&output);
        assert!(err.contains(expected), "{args:?}: {err}");
        assert!(err.contains("nothing was written"), "{args:?}: {err}");
        assert_eq!(std::fs::read(&target).unwrap(), b"old contents", "{args:?}");
    };
    // A regular file without --force-file.
    check(
        &["--image", path(&raw), "--device", path(&target), "--yes"],
        "is a regular file, not a block device",
    );
    // No terminal and no --yes.
    check(
        &["--image", path(&raw), "--device", path(&target), "--force-file"],
        "without --yes: stdin is not a terminal",
    );
    // Neither a block device nor a file.
    check(
        &["--image", path(&raw), "--device", "/dev/null", "--force-file", "--yes"],
        "`/dev/null` is neither a block device nor a regular file",
    );
    // A missing image.
    check(
        &[
            "--image",
            "/nonexistent.img",
            "--device",
            path(&target),
            "--force-file",
            "--yes",
        ],
        "failed to open the image `/nonexistent.img`",
    );
}

/// A loop device over a file of `size` bytes; detached on drop.
struct Loop {
    device: String,
    _backing: tempfile::NamedTempFile,
}

impl Loop {
    /// `None` (a loud skip; a failure in CI) when not root or no losetup.
    fn new(size: u64) -> Option<Loop> {
        require_tool("losetup", "Debian package `mount`: loop devices as flash targets")?;
        if !rustix::process::geteuid().is_root() {
            assert!(!in_ci(), "loop-device flash tests need root in CI");
            eprintln!("\n!!! SKIPPED: loop-device flash tests need root !!!\n");
            return None;
        }
        let backing = tempfile::NamedTempFile::new().unwrap();
        backing.as_file().set_len(size).unwrap();
        let output = Command::new("losetup")
            .args(["--find", "--show"])
            .arg(backing.path())
            .output()
            .unwrap();
        assert!(output.status.success(), "losetup: {}", stderr(&output));
        Some(Loop {
            device: stdout(&output).trim().to_string(),
            _backing: backing,
        })
    }

    /// `appliance flash` of `image` onto this device, confirmed.
    fn flash(&self, image: &Path, env: &[(&str, &str)]) -> Output {
        flash(&["--image", path(image), "--device", &self.device, "--yes"], env)
    }

    /// The same, which fails (exit 1) saying `said`.
    #[track_caller]
    fn flash_fails(&self, image: &Path, env: &[(&str, &str)], said: &str) {
        let output = self.flash(image, env);
        assert_eq!(output.status.code(), Some(1));
        assert_contains(stderr(&output), said);
    }
}

/// A loop device of `size` bytes (`None` as `Loop::new`), and the images
/// of `image_size` bytes (`images`) in a directory of their own.
fn loop_and_images(size: u64, image_size: usize) -> Option<(Loop, tempfile::TempDir, Images)> {
    let device = Loop::new(size)?;
    let dir = tempfile::tempdir().unwrap();
    let images = images(dir.path(), image_size);
    Some((device, dir, images))
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["--detach", &self.device]).status();
    }
}

#[test]
fn an_image_lands_on_a_loop_device_verified() {
    let Some((device, _dir, (_, compressed, bytes))) = loop_and_images(8 << 20, 5 << 20) else {
        return;
    };
    let output = device.flash(&compressed, &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    let mut on_device = std::fs::read(&device.device).unwrap();
    assert_eq!(on_device.len(), 8 << 20);
    on_device.truncate(bytes.len());
    assert!(on_device == bytes, "the device differs from the image");
}

#[test]
fn a_corrupted_write_to_a_loop_device_is_caught() {
    let Some((device, _dir, (raw, _, _))) = loop_and_images(4 << 20, 3 << 20) else {
        return;
    };
    device.flash_fails(
        &raw,
        &[("APPLIANCE_TEST_FLASH_CORRUPT_AT", "0")],
        "error: verification failed",
    );
}

#[test]
fn a_device_smaller_than_the_image_is_refused() {
    let Some((device, _dir, (raw, _, _))) = loop_and_images(1 << 20, 2 << 20) else {
        return;
    };
    let said = format!(
        "`{}` holds 1.0 MiB but the image needs 2.0 MiB; nothing was written",
        device.device
    );
    device.flash_fails(&raw, &[], &said);
    assert!(
        std::fs::read(&device.device).unwrap().iter().all(|&b| b == 0),
        "the device was written"
    );
}

#[test]
fn a_mounted_device_is_refused() {
    let Some(device) = Loop::new(8 << 20) else {
        return;
    };
    if require_tool("mkfs.ext4", "Debian package `e2fsprogs`: a file system to mount").is_none() {
        return;
    }
    let status = Command::new("mkfs.ext4").args(["-q", &device.device]).status().unwrap();
    assert!(status.success());
    let mount_point = tempfile::tempdir().unwrap();
    let status = Command::new("mount")
        .arg(&device.device)
        .arg(mount_point.path())
        .status()
        .unwrap();
    assert!(status.success());
    let dir = tempfile::tempdir().unwrap();
    let (raw, _, image) = images(dir.path(), 1 << 20);
    let output = device.flash(&raw, &[]);
    let _ = Command::new("umount").arg(mount_point.path()).status();
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert_contains(
        &err,
        format!(
            "is in use: {} is mounted on {}; nothing was written",
            device.device,
            mount_point.path().display()
        ),
    );
    // The file system is still there (its superblock magic), the image is not.
    let on_device = std::fs::read(&device.device).unwrap();
    assert_eq!(on_device[1024 + 0x38..1024 + 0x3a], [0x53, 0xef], "ext4 magic");
    assert!(!on_device.starts_with(&image[..4096]), "the image was written");
}
