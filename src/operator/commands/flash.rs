//! `appliance flash`: an image onto an SD card or disk, verified.
//!
//! The image is decompressed on the fly (`.img.zst`, as nixpkgs' SD image
//! is), written in large blocks while hashing, flushed with fsync, then read
//! back from the device (its cached pages dropped first) and hashed again.
//! Everything that can be refused is refused before the first byte is
//! written, and every error says what the device holds afterwards.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, IsTerminal, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sha2::{Digest, Sha256};

use crate::operator::cli::FlashArgs;
use crate::operator::nixlog::human_bytes;

/// Debug builds only: flip the byte at this offset of what is written (not
/// of what is hashed), so tests can prove verification catches corruption.
pub const CORRUPT_HOOK_ENV: &str = "APPLIANCE_TEST_FLASH_CORRUPT_AT";

/// Large writes: SD cards are slow with small ones.
const BLOCK: usize = 4 << 20;

/// The first bytes of every zstd frame.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// What the device holds when a step fails.
const UNCHANGED: &str = "nothing was written";

/// The image to write.
#[derive(Debug)]
pub struct Image {
    pub path: PathBuf,
    pub compressed: bool,
    /// Bytes once decompressed.
    pub size: u64,
}

/// Where the image goes.
#[derive(Debug)]
pub struct Device {
    pub path: PathBuf,
    pub kind: DeviceKind,
}

#[derive(Debug, PartialEq, Eq)]
pub enum DeviceKind {
    /// A block device: its size and its sysfs directory.
    Block { size: u64, sysfs: PathBuf },
    /// A regular file (only with `--force-file`); `None` if it is new.
    File { exists: bool },
}

pub fn run(args: &FlashArgs) -> Result<()> {
    let image = open_image(&args.image)?;
    let device = inspect_device(&args.device, args.force_file)?;
    check_fits(&image, &device)?;
    confirm(&image, &device, args.yes)?;
    let written = write(&image, &device)?;
    verify(&device, written.bytes, &written.sha256)?;
    crate::common::term::println(&format!(
        "wrote {} ({}) to {} and read it back: sha256 {}",
        image.path.display(),
        human_bytes(written.bytes),
        device.path.display(),
        hex::encode(written.sha256)
    ))?;
    Ok(())
}

/// Finds the image (a build result is searched for one), whether it is
/// zstd-compressed (by its magic, not its name) and its decompressed size.
pub fn open_image(path: &Path) -> Result<Image> {
    let path = if path.is_dir() {
        find_image(path)?
    } else {
        path.to_path_buf()
    };
    let mut file =
        File::open(&path).with_context(|| format!("failed to open the image `{}`; {UNCHANGED}", path.display()))?;
    let mut head = [0u8; 18];
    let read = read_up_to(&mut file, &mut head)?;
    let compressed = read >= 4 && head[..4] == ZSTD_MAGIC;
    let size = if compressed {
        match zstd::zstd_safe::get_frame_content_size(&head[..read]) {
            Ok(Some(size)) => size,
            // The frame does not record its size: count it.
            _ => decompressed_size(&path)?,
        }
    } else {
        file.metadata()?.len()
    };
    if size == 0 {
        bail!("the image `{}` is empty; {UNCHANGED}", path.display());
    }
    Ok(Image { path, compressed, size })
}

/// The one `.img` or `.img.zst` in a build result (nixpkgs: `sd-image/`).
fn find_image(dir: &Path) -> Result<PathBuf> {
    let mut found = super::build::files_ending_in(dir, &[".img", ".img.zst"]);
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => bail!("no `.img` or `.img.zst` under `{}`; {UNCHANGED}", dir.display()),
        _ => bail!(
            "{} images under `{}`; pass one with --image; {UNCHANGED}",
            found.len(),
            dir.display()
        ),
    }
}

fn decompressed_size(path: &Path) -> Result<u64> {
    let mut decoder = zstd::stream::read::Decoder::new(File::open(path)?)?;
    std::io::copy(&mut decoder, &mut std::io::sink())
        .with_context(|| format!("the image `{}` is not valid zstd; {UNCHANGED}", path.display()))
}

fn read_up_to(reader: &mut impl Read, buffer: &mut [u8]) -> Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match reader.read(&mut buffer[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// What the target is, and every reason not to write to it.
pub fn inspect_device(path: &Path, force_file: bool) -> Result<Device> {
    let metadata = match std::fs::metadata(path) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound && force_file => {
            return Ok(Device {
                path: path.to_path_buf(),
                kind: DeviceKind::File { exists: false },
            });
        }
        Err(error) => bail!("cannot use `{}`: {error}; {UNCHANGED}", path.display()),
    };
    let file_type = metadata.file_type();
    if file_type.is_file() {
        if !force_file {
            bail!(
                "`{}` is a regular file, not a block device; {UNCHANGED}\nhint: pass --force-file to write the image into a file",
                path.display()
            );
        }
        return Ok(Device {
            path: path.to_path_buf(),
            kind: DeviceKind::File { exists: true },
        });
    }
    if !file_type.is_block_device() {
        bail!(
            "`{}` is neither a block device nor a regular file; {UNCHANGED}",
            path.display()
        );
    }
    let rdev = metadata.rdev();
    let sysfs = PathBuf::from(format!("/sys/dev/block/{}:{}", major(rdev), minor(rdev)));
    if sysfs.join("partition").exists() {
        bail!(
            "`{}` is a partition; an image is written to the whole device; {UNCHANGED}\nhint: pass the disk itself (e.g. `/dev/sdb`, not `/dev/sdb1`)",
            path.display()
        );
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").context("failed to read /proc/self/mountinfo")?;
    let swaps = std::fs::read_to_string("/proc/swaps").unwrap_or_default();
    let in_use = uses(&related_devices(&sysfs), &mountinfo, &swaps);
    if !in_use.is_empty() {
        bail!(
            "`{}` is in use: {}; {UNCHANGED}\nhint: unmount it first (`umount`), or pick another device",
            path.display(),
            in_use.join(", ")
        );
    }
    let size = block_size(path, &sysfs)?;
    Ok(Device {
        path: path.to_path_buf(),
        kind: DeviceKind::Block { size, sysfs },
    })
}

fn major(rdev: u64) -> u64 {
    ((rdev >> 32) & 0xffff_f000) | ((rdev >> 8) & 0xfff)
}

fn minor(rdev: u64) -> u64 {
    ((rdev >> 12) & 0xffff_ff00) | (rdev & 0xff)
}

/// A block device or one of its partitions: kernel name, `major:minor`,
/// and what sits on top of it (device mapper, RAID).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Related {
    pub name: String,
    pub dev: String,
    pub holders: Vec<String>,
}

/// The device of a sysfs directory and its partitions (subdirectories with
/// a `partition` file), each with its holders.
pub fn related_devices(sysfs: &Path) -> Vec<Related> {
    let read = |dir: &Path| -> Option<Related> {
        let dev = std::fs::read_to_string(dir.join("dev")).ok()?.trim().to_string();
        let name = std::fs::read_to_string(dir.join("uevent"))
            .ok()
            .and_then(|u| u.lines().find_map(|l| l.strip_prefix("DEVNAME=").map(str::to_string)))
            .or_else(|| {
                let real = dir.canonicalize().ok()?;
                Some(real.file_name()?.to_string_lossy().into_owned())
            })?;
        let mut holders: Vec<String> = std::fs::read_dir(dir.join("holders"))
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        holders.sort();
        Some(Related { name, dev, holders })
    };
    let mut found: Vec<Related> = read(sysfs).into_iter().collect();
    let mut partitions: Vec<Related> = std::fs::read_dir(sysfs)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.join("partition").is_file())
                .filter_map(|p| read(&p))
                .collect()
        })
        .unwrap_or_default();
    partitions.sort_by(|a, b| a.name.cmp(&b.name));
    found.extend(partitions);
    found
}

/// Why these devices must not be overwritten: mounts (by `major:minor` or
/// by source path, from /proc/self/mountinfo), swap, and holders.
pub fn uses(devices: &[Related], mountinfo: &str, swaps: &str) -> Vec<String> {
    let mut found = Vec::new();
    for device in devices {
        let path = format!("/dev/{}", device.name);
        for line in mountinfo.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            let source = line
                .split_once(" - ")
                .and_then(|(_, rest)| rest.split(' ').nth(1))
                .unwrap_or("");
            if fields.get(2) == Some(&device.dev.as_str()) || source == path {
                let mount_point = fields.get(4).copied().unwrap_or("?");
                found.push(format!("{path} is mounted on {mount_point}"));
            }
        }
        if swaps
            .lines()
            .skip(1)
            .any(|l| l.split_whitespace().next() == Some(path.as_str()))
        {
            found.push(format!("{path} is swap"));
        }
        for holder in &device.holders {
            found.push(format!("{path} is held by {holder}"));
        }
    }
    found.dedup();
    found
}

/// A block device's size: sysfs counts 512-byte sectors; seeking to the
/// end is the fallback.
fn block_size(path: &Path, sysfs: &Path) -> Result<u64> {
    if let Some(sectors) = std::fs::read_to_string(sysfs.join("size"))
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
    {
        return Ok(sectors * 512);
    }
    let mut file = File::open(path).with_context(|| format!("failed to open `{}`; {UNCHANGED}", path.display()))?;
    Ok(file.seek(SeekFrom::End(0))?)
}

fn check_fits(image: &Image, device: &Device) -> Result<()> {
    if let DeviceKind::Block { size, .. } = device.kind
        && size < image.size
    {
        bail!(
            "`{}` holds {} but the image needs {}; {UNCHANGED}\nhint: use a larger card or disk",
            device.path.display(),
            human_bytes(size),
            human_bytes(image.size)
        );
    }
    Ok(())
}

/// `--yes`, or a person at a terminal typing `yes`.
fn confirm(image: &Image, device: &Device, yes: bool) -> Result<()> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        bail!(
            "refusing to overwrite `{}` without --yes: stdin is not a terminal, so nobody can confirm; {UNCHANGED}",
            device.path.display()
        );
    }
    eprint!(
        "Overwrite {} ({}) with {} ({})? Everything on it is lost. Type `yes` to go on: ",
        device.path.display(),
        describe(device),
        image.path.display(),
        human_bytes(image.size)
    );
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if answer.trim() != "yes" {
        bail!("cancelled; {UNCHANGED}");
    }
    Ok(())
}

/// Size and model of a device, for the prompt.
fn describe(device: &Device) -> String {
    match &device.kind {
        DeviceKind::Block { size, sysfs } => {
            let model = std::fs::read_to_string(sysfs.join("device/model")).unwrap_or_default();
            let model = model.trim();
            if model.is_empty() {
                human_bytes(*size)
            } else {
                format!("{}, {model}", human_bytes(*size))
            }
        }
        DeviceKind::File { exists: true } => "a regular file".to_string(),
        DeviceKind::File { exists: false } => "a new file".to_string(),
    }
}

fn reader(image: &Image) -> Result<Box<dyn Read>> {
    let file = File::open(&image.path).with_context(|| format!("failed to open `{}`", image.path.display()))?;
    Ok(if image.compressed {
        Box::new(zstd::stream::read::Decoder::new(file)?)
    } else {
        Box::new(file)
    })
}

fn corrupt_at() -> Option<u64> {
    if !cfg!(debug_assertions) {
        return None;
    }
    std::env::var(CORRUPT_HOOK_ENV).ok()?.parse().ok()
}

/// Writes the image, fsyncs, returns the length and sha256 of what was
/// meant to be written.
fn write(image: &Image, device: &Device) -> Result<Written> {
    let mut options = OpenOptions::new();
    options.write(true);
    match device.kind {
        // O_EXCL on a block device: the kernel refuses if anything (a mount
        // that appeared since the check) holds it.
        DeviceKind::Block { .. } => {
            options.custom_flags(rustix::fs::OFlags::EXCL.bits() as i32);
        }
        DeviceKind::File { .. } => {
            options.create(true).truncate(true);
        }
    }
    let mut out = options.open(&device.path).map_err(|e| {
        let hint = match e.kind() {
            std::io::ErrorKind::PermissionDenied => "\nhint: writing a device needs root: run it with sudo",
            _ if e.raw_os_error() == Some(rustix::io::Errno::BUSY.raw_os_error()) => {
                "\nhint: something holds the device (a mount or another program); unmount it first"
            }
            _ => "",
        };
        anyhow!(
            "failed to open `{}` for writing: {e}; {UNCHANGED}{hint}",
            device.path.display()
        )
    })?;
    let mut input = reader(image)?;
    let mut meter = Meter::new(image.size, "writing");
    let corrupt = corrupt_at();
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; BLOCK];
    let mut offset = 0u64;
    loop {
        let n = read_up_to(&mut input, &mut buffer).map_err(|e| {
            anyhow!(
                "failed to read the image at byte {offset}: {e:#}\n{}",
                partial(device, offset)
            )
        })?;
        if n == 0 {
            break;
        }
        let chunk = &mut buffer[..n];
        hasher.update(&*chunk);
        if let Some(at) = corrupt.filter(|at| (offset..offset + n as u64).contains(at)) {
            chunk[(at - offset) as usize] ^= 0xff;
        }
        out.write_all(chunk)
            .map_err(|e| anyhow!("failed to write at byte {offset}: {e}\n{}", partial(device, offset)))?;
        offset += n as u64;
        meter.set(offset);
    }
    meter.finish();
    crate::common::term::eprintln(&format!(
        "flushing {} to {}",
        human_bytes(offset),
        device.path.display()
    ));
    out.sync_all().map_err(|e| {
        anyhow!(
            "failed to flush `{}`: {e}\n`{}` may hold only part of the image: do not boot it; flash again",
            device.path.display(),
            device.path.display()
        )
    })?;
    // A zstd file of several frames records only the first frame's size;
    // what was written is what counts (and what is verified).
    Ok(Written {
        sha256: hasher.finalize().into(),
        bytes: offset,
    })
}

/// What `write` put on the device: its length and sha256.
struct Written {
    sha256: [u8; 32],
    bytes: u64,
}

fn partial(device: &Device, written: u64) -> String {
    format!(
        "`{}` now holds the first {} of the image over its old contents: it will not boot; fix the cause and flash again",
        device.path.display(),
        human_bytes(written)
    )
}

/// Reads the image's length back from the device, past the page cache.
fn verify(device: &Device, size: u64, expected: &[u8; 32]) -> Result<()> {
    let file = File::open(&device.path).with_context(|| {
        format!(
            "failed to open `{}` to verify it; the image was written but is not verified",
            device.path.display()
        )
    })?;
    // Written pages are clean after fsync; dropping them makes the read
    // come from the device, not from memory.
    rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed)
        .with_context(|| format!("failed to drop cached pages of `{}`", device.path.display()))?;
    let mut meter = Meter::new(size, "verifying");
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; BLOCK];
    let mut input = file.take(size);
    let mut offset = 0u64;
    loop {
        let n = read_up_to(&mut input, &mut buffer).with_context(|| {
            format!(
                "failed to read `{}` back at byte {offset}; the image was written but is not verified",
                device.path.display()
            )
        })?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        offset += n as u64;
        meter.set(offset);
    }
    meter.finish();
    let actual: [u8; 32] = hasher.finalize().into();
    if offset != size || &actual != expected {
        bail!(
            "verification failed: `{}` reads back {} with sha256 {}, the image is {} with sha256 {}\n`{}` holds a damaged copy of the image: do not boot it; flash again, and if it fails again the card is faulty",
            device.path.display(),
            human_bytes(offset),
            hex::encode(actual),
            human_bytes(size),
            hex::encode(expected),
            device.path.display()
        );
    }
    Ok(())
}

/// Bytes done of a stage: a bar on a terminal, otherwise a line at every
/// tenth, so logs show the stage moving.
struct Meter {
    bar: Option<ProgressBar>,
    what: &'static str,
    total: u64,
    tenths: u64,
}

impl Meter {
    fn new(total: u64, what: &'static str) -> Meter {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{msg:9} [{elapsed_precise}] {bar:30} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                )
                .expect("a valid template")
                .progress_chars("=> "),
            );
            bar.set_message(what);
            bar
        });
        if bar.is_none() {
            // Not `eprintln!`: a closed stderr must not stop a flash halfway.
            crate::common::term::eprintln(&format!("{what} {}", human_bytes(total)));
        }
        Meter {
            bar,
            what,
            total,
            tenths: 0,
        }
    }

    fn set(&mut self, done: u64) {
        // More than announced: a zstd stream of several frames.
        if done > self.total {
            self.total = done;
            if let Some(bar) = &self.bar {
                bar.set_length(done);
            }
        }
        if let Some(bar) = &self.bar {
            bar.set_position(done);
            return;
        }
        let tenths = done * 10 / self.total.max(1);
        if tenths > self.tenths {
            self.tenths = tenths;
            crate::common::term::eprintln(&format!(
                "{} {}% ({} of {})",
                self.what,
                tenths * 10,
                human_bytes(done),
                human_bytes(self.total)
            ));
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
36 22 7:1 / /mnt/card rw,relatime shared:5 - vfat /dev/loop9p1 rw
40 22 0:45 / /mnt/btrfs rw,relatime shared:6 - btrfs /dev/loop9p2 rw
";

    fn device(name: &str, dev: &str) -> Related {
        Related {
            name: name.into(),
            dev: dev.into(),
            holders: vec![],
        }
    }

    #[test]
    fn mounts_of_the_device_and_its_partitions_are_found() {
        let devices = [
            device("loop9", "7:0"),
            device("loop9p1", "7:1"),
            device("loop9p2", "7:2"),
        ];
        assert_eq!(
            uses(&devices, MOUNTINFO, ""),
            [
                "/dev/loop9p1 is mounted on /mnt/card",
                // btrfs reports a virtual major:minor: found by source path.
                "/dev/loop9p2 is mounted on /mnt/btrfs"
            ]
        );
        assert!(uses(&[device("sdz", "8:240")], MOUNTINFO, "").is_empty());
    }

    #[test]
    fn swap_and_holders_count_as_use() {
        let swaps = "Filename\tType\tSize\tUsed\tPriority\n/dev/sdz2 partition 1024 0 -2\n";
        let mut held = device("sdz1", "8:241");
        held.holders = vec!["dm-0".into()];
        assert_eq!(
            uses(&[device("sdz", "8:240"), held, device("sdz2", "8:242")], "", swaps),
            ["/dev/sdz1 is held by dm-0", "/dev/sdz2 is swap"]
        );
    }

    #[test]
    fn partitions_are_read_from_sysfs() {
        // A sysfs-shaped tree: the disk, two partitions, one held.
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("sdz");
        for (sub, dev) in [("", "8:240"), ("sdz1", "8:241"), ("sdz2", "8:242")] {
            let d = disk.join(sub);
            std::fs::create_dir_all(d.join("holders")).unwrap();
            std::fs::write(d.join("dev"), format!("{dev}\n")).unwrap();
            let name = if sub.is_empty() { "sdz" } else { sub };
            std::fs::write(d.join("uevent"), format!("MAJOR=8\nDEVNAME={name}\n")).unwrap();
            if !sub.is_empty() {
                std::fs::write(d.join("partition"), "1\n").unwrap();
            }
        }
        std::fs::create_dir(disk.join("sdz2/holders/dm-3")).unwrap();
        std::fs::create_dir(disk.join("queue")).unwrap();
        let found = related_devices(&disk);
        assert_eq!(
            found,
            [
                device("sdz", "8:240"),
                device("sdz1", "8:241"),
                Related {
                    name: "sdz2".into(),
                    dev: "8:242".into(),
                    holders: vec!["dm-3".into()]
                }
            ]
        );
    }

    #[test]
    fn device_numbers_split_like_the_kernels() {
        // glibc's makedev encoding.
        let makedev = |major: u64, minor: u64| {
            ((major & 0xfff) << 8) | ((major & !0xfff) << 32) | (minor & 0xff) | ((minor & !0xff) << 12)
        };
        let rdev = makedev(259, 65537);
        assert_eq!((major(rdev), minor(rdev)), (259, 65537));
        assert_eq!((major(0x0701), minor(0x0701)), (7, 1));
    }
}
