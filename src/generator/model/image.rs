//! One description of every OCI image the appliance runs. The Nix images
//! (images/*.nix, built from generated/images/*.json), the sandbox run options
//! (user, volumes, tmpfs) and the rehearsal's Debian-built test images are
//! all derived from it, so they cannot drift apart. The agents' images are
//! described by their kinds (`crate::generator::kinds`); this module has the types and
//! the services' images.

use crate::generator::kinds;
use crate::generator::model::Size;

pub const DIND_VERSION: &str = "29";
/// Ollama's minor release in the pinned nixpkgs (`ollama`, `ollama-cuda`);
/// the image asserts it when built.
pub const OLLAMA_VERSION: &str = "0.32";

/// The account an image's process runs as. Every image has it in a minimal
/// `/etc/passwd` and `/etc/group` (Chromium and Python look themselves up).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Account {
    pub name: &'static str,
    pub uid: u32,
    pub gid: u32,
    pub home: &'static str,
}

impl Account {
    /// Docker's `--user` value.
    pub fn user(&self) -> String {
        format!("{}:{}", self.uid, self.gid)
    }
}

/// What backs a writable directory under the sandbox's read-only root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    /// A named Docker volume `appliance-<agent>-<name>`: state that must
    /// survive a restart. Docker copies the image's directory (owner and
    /// mode) into a new volume, so the image must carry it.
    Volume { name: &'static str },
    /// A tmpfs of this size: scratch space, gone at restart.
    Tmpfs { size: Size },
    /// A tmpfs sized by the agent's `code_storage` (default 4g): the inner
    /// Docker's storage.
    CodeStorage,
}

/// Who owns a writable directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// The image's account.
    Account,
    /// root, e.g. a sticky world-writable /tmp.
    Root,
}

/// A directory the image's user must be able to write. It exists in the
/// image with this owner and mode, and is mounted writable by the sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Writable {
    pub path: &'static str,
    /// Octal permission bits, e.g. `0o700`; `0o1777` for a shared /tmp.
    pub mode: u32,
    pub owner: Owner,
    pub storage: Storage,
    /// Whether programs may run from it. Only where the sandbox's purpose is
    /// to run code: the inner Docker's storage holds the containers' root
    /// filesystems (`exec /bin/sh: permission denied` without it). Every
    /// other writable directory is `noexec`, said explicitly because Docker
    /// gives a `--tmpfs` `noexec` by default only.
    pub exec: bool,
}

impl Writable {
    /// The mode as Docker's tmpfs option and `chmod` take it: `0700`, `1777`.
    pub fn mode_octal(&self) -> String {
        format!("{:04o}", self.mode)
    }

    /// The owner's `(uid, gid)` in an image with this account.
    pub fn owner_ids(&self, account: &Account) -> (u32, u32) {
        match self.owner {
            Owner::Account => (account.uid, account.gid),
            Owner::Root => (0, 0),
        }
    }
}

/// The upstream release the tag names; the Nix image asserts it when
/// evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionCheck {
    /// The tag is the package's version.
    Exact { package: &'static str },
    /// The tag is the package's major version.
    Major { package: &'static str },
    /// The tag is the package's `major.minor` version: nixpkgs' Ollama,
    /// whose patch releases follow nixpkgs.
    MajorMinor { package: &'static str },
    /// The package has no releases (nixpkgs' `0-unstable-<date>`): the tag
    /// is the layout's revision and is not compared.
    Unreleased { package: &'static str },
}

impl VersionCheck {
    pub fn package(&self) -> &'static str {
        match self {
            VersionCheck::Exact { package }
            | VersionCheck::Major { package }
            | VersionCheck::MajorMinor { package }
            | VersionCheck::Unreleased { package } => package,
        }
    }
}

/// One OCI image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageLayout {
    /// Short name: `images/<name>.nix`, `generated/images/<name>.json`.
    pub name: &'static str,
    pub repository: &'static str,
    pub tag: &'static str,
    pub purpose: &'static str,
    pub account: Account,
    /// Every writable path, with what backs it in the sandbox.
    pub writable: &'static [Writable],
    pub entrypoint: &'static [&'static str],
    /// The image's `Env`, `KEY=value`.
    pub env: &'static [&'static str],
    /// Package attributes of nixpkgs (or the flake's overlay) the image
    /// contains, e.g. `chromium`.
    pub packages: &'static [&'static str],
    /// Those of `packages` only an agent with the browser tool needs: left
    /// out when no sandbox running the image has it.
    pub browser_packages: &'static [&'static str],
    /// The plugins an agent's package bundles that the image keeps (an
    /// OpenClaw image's `dist/extensions/<id>`, by plugin id); the build
    /// removes every other. Empty: the package as it ships.
    pub bundled_plugins: &'static [&'static str],
    pub version_check: VersionCheck,
}

impl ImageLayout {
    /// `repository:tag`, the reference sandboxes run.
    pub fn reference(&self) -> String {
        format!("{}:{}", self.repository, self.tag)
    }

    /// The image's `Env`: its own settings and the account's HOME.
    pub fn image_env(&self) -> Vec<String> {
        let mut env: Vec<String> = self.env.iter().map(|e| e.to_string()).collect();
        env.push(format!("HOME={}", self.account.home));
        env
    }

    /// The packages of the image as the spec uses it: without the browser
    /// when no agent running it has the browser tool.
    pub fn packages_for(&self, browser: bool) -> Vec<&'static str> {
        self.packages
            .iter()
            .copied()
            .filter(|p| browser || !self.browser_packages.contains(p))
            .collect()
    }

    /// The writable directories backed by named volumes.
    pub fn volumes(&self) -> impl Iterator<Item = (&'static str, &Writable)> {
        self.writable.iter().filter_map(|w| match w.storage {
            Storage::Volume { name } => Some((name, w)),
            _ => None,
        })
    }
}

pub(crate) const CA_BUNDLE: &str = "SSL_CERT_FILE=/etc/ssl/certs/ca-bundle.crt";
/// Scratch space every image gets.
/// An agent's state directory at `path`: its own, on the sandbox's
/// `state` volume (what backups keep), never executable.
pub(crate) const fn state_volume(path: &'static str) -> Writable {
    Writable {
        path,
        mode: 0o700,
        owner: Owner::Account,
        storage: Storage::Volume { name: "state" },
        exec: false,
    }
}

pub(crate) const TMP: Writable = Writable {
    path: "/tmp",
    mode: 0o1777,
    owner: Owner::Root,
    storage: Storage::Tmpfs { size: Size::mib(256) },
    exec: false,
};

const DOCKER_IN_GVISOR: ImageLayout = ImageLayout {
    name: "docker-in-gvisor",
    repository: "agent-appliance/docker-in-gvisor",
    tag: DIND_VERSION,
    purpose: "Docker 29 daemon for code execution inside gVisor, with the code-runner image it loads at start; its /var/lib/docker is a tmpfs the sandbox mounts",
    // dockerd must be root inside the sandbox; gVisor's root has no host
    // privileges.
    account: Account {
        name: "root",
        uid: 0,
        gid: 0,
        home: "/root",
    },
    writable: &[
        // gVisor needs tmpfs as the upper layer of the inner overlayfs.
        Writable {
            path: "/var/lib/docker",
            mode: 0o710,
            owner: Owner::Root,
            storage: Storage::CodeStorage,
            exec: true,
        },
        Writable {
            path: "/run",
            mode: 0o755,
            owner: Owner::Root,
            storage: Storage::Tmpfs { size: Size::mib(64) },
            exec: false,
        },
        TMP,
    ],
    // The sandbox's command is `appliance-dind-start` with dockerd's flags.
    entrypoint: &["tini", "-s", "--"],
    env: &[CA_BUNDLE],
    packages: &["docker_29", "appliance-dind-start", "cacert", "tini"],
    browser_packages: &[],
    bundled_plugins: &[],
    version_check: VersionCheck::Major { package: "docker_29" },
};

/// Ollama's account: not root, Ollama needs no privilege to serve.
const OLLAMA_ACCOUNT: Account = Account {
    name: "ollama",
    uid: 11434,
    gid: 11434,
    home: "/var/lib/ollama",
};
/// Models live in a named volume, so a restart does not pull them again.
const OLLAMA_WRITABLE: &[Writable] = &[
    Writable {
        path: "/var/lib/ollama",
        mode: 0o700,
        owner: Owner::Account,
        storage: Storage::Volume { name: "models" },
        // Model blobs are data; Ollama's runners are in its package.
        exec: false,
    },
    TMP,
];
/// Where models are stored, and that loaded models stay loaded: the demo
/// loaded them with a keep-alive of 9001h, and they must fit together.
const OLLAMA_ENV: &[&str] = &[
    CA_BUNDLE,
    "OLLAMA_MODELS=/var/lib/ollama/models",
    "OLLAMA_KEEP_ALIVE=-1",
];

const OLLAMA: ImageLayout = ImageLayout {
    name: "ollama",
    repository: "agent-appliance/ollama",
    tag: OLLAMA_VERSION,
    purpose: "Ollama from nixpkgs (CPU) serving the spec's models; models in a named volume",
    account: OLLAMA_ACCOUNT,
    writable: OLLAMA_WRITABLE,
    entrypoint: &["ollama", "serve"],
    env: OLLAMA_ENV,
    packages: &["ollama", "cacert"],
    browser_packages: &[],
    bundled_plugins: &[],
    version_check: VersionCheck::MajorMinor { package: "ollama" },
};

const OLLAMA_CUDA: ImageLayout = ImageLayout {
    name: "ollama-cuda",
    repository: "agent-appliance/ollama-cuda",
    tag: OLLAMA_VERSION,
    purpose: "Ollama from nixpkgs built with CUDA, serving the spec's models on the host's NVIDIA GPUs through gVisor's nvproxy; models in a named volume",
    account: OLLAMA_ACCOUNT,
    writable: OLLAMA_WRITABLE,
    entrypoint: &["ollama", "serve"],
    env: OLLAMA_ENV,
    packages: &["ollama-cuda", "cacert"],
    browser_packages: &[],
    bundled_plugins: &[],
    version_check: VersionCheck::MajorMinor { package: "ollama-cuda" },
};

/// The tag of the SearXNG image: its layout's revision. nixpkgs' SearXNG
/// has no releases (`0-unstable-<date>`); the image's version label
/// records which snapshot it holds.
pub const SEARXNG_TAG: &str = "1";

const SEARXNG: ImageLayout = ImageLayout {
    name: "searxng",
    repository: "agent-appliance/searxng",
    tag: SEARXNG_TAG,
    purpose: "SearXNG from nixpkgs: the self-hosted search backend of Hermes' `crawler` tool (web_search)",
    account: Account {
        name: "searxng",
        uid: 10080,
        gid: 10080,
        home: "/var/empty",
    },
    writable: &[TMP],
    entrypoint: &["searxng-run"],
    env: &[CA_BUNDLE, "SEARXNG_SETTINGS_PATH=/etc/searxng/settings.yml"],
    packages: &["searxng", "cacert"],
    browser_packages: &[],
    bundled_plugins: &[],
    version_check: VersionCheck::Unreleased { package: "searxng" },
};

/// The tag of the page extraction image: its layout's revision. The
/// service is this repository's own (nix/packages/webextract.py); the
/// image's version label records the trafilatura it extracts with.
pub const WEBEXTRACT_TAG: &str = "1";

const WEBEXTRACT: ImageLayout = ImageLayout {
    name: "webextract",
    repository: "agent-appliance/webextract",
    tag: WEBEXTRACT_TAG,
    purpose: "appliance-webextract, the appliance's own page extraction service (trafilatura from nixpkgs) speaking the subset of Tavily's /extract API Hermes' `crawler` tool calls (web_extract)",
    account: Account {
        name: "webextract",
        uid: 10090,
        gid: 10090,
        home: "/var/empty",
    },
    writable: &[TMP],
    entrypoint: &["appliance-webextract"],
    env: &[CA_BUNDLE],
    packages: &["appliance-webextract", "cacert"],
    browser_packages: &[],
    bundled_plugins: &[],
    version_check: VersionCheck::Unreleased {
        package: "python3Packages.trafilatura",
    },
};

/// Every image, sorted by name: the agent kinds' and the services'.
pub fn all() -> Vec<&'static ImageLayout> {
    let mut all: Vec<&'static ImageLayout> = [&DOCKER_IN_GVISOR, &OLLAMA, &OLLAMA_CUDA, &SEARXNG, &WEBEXTRACT]
        .into_iter()
        .chain(kinds::ALL.iter().map(|kind| kind.image()))
        .collect();
    all.sort_by_key(|layout| layout.name);
    all
}

/// The image of the crawler's search backend.
pub fn searxng() -> &'static ImageLayout {
    &SEARXNG
}

/// The image of the crawler's extraction backend.
pub fn webextract() -> &'static ImageLayout {
    &WEBEXTRACT
}

/// The image Ollama runs in: CUDA on NVIDIA hosts, CPU elsewhere.
pub fn ollama(cuda: bool) -> &'static ImageLayout {
    if cuda { &OLLAMA_CUDA } else { &OLLAMA }
}

/// The image code-execution sandboxes run in.
pub fn docker_in_gvisor() -> &'static ImageLayout {
    &DOCKER_IN_GVISOR
}

/// The layout of an image reference a sandbox runs (`repository:tag`).
pub fn by_reference(reference: &str) -> Option<&'static ImageLayout> {
    all().into_iter().find(|layout| layout.reference() == reference)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_image_has_distinct_names_and_paths_under_its_account() {
        let mut names: Vec<_> = all().iter().map(|l| l.name).collect();
        names.dedup();
        assert_eq!(names.len(), all().len());
        for layout in all() {
            assert!(layout.repository.ends_with(layout.name), "{}", layout.name);
            assert_eq!(by_reference(&layout.reference()), Some(layout));
            let paths: Vec<_> = layout.writable.iter().map(|w| w.path).collect();
            let mut unique = paths.clone();
            unique.sort();
            unique.dedup();
            assert_eq!(unique.len(), paths.len(), "{}: duplicate writable path", layout.name);
            assert!(layout.volumes().count() <= 1, "{}: one state volume", layout.name);
            assert!(layout.writable.iter().all(|w| w.path.starts_with('/')));
        }
    }

    #[test]
    fn the_browser_is_left_out_only_where_no_agent_uses_it() {
        let openclaw = &kinds::openclaw::IMAGE;
        let picoclaw = &kinds::picoclaw::IMAGE;
        assert_eq!(openclaw.packages_for(true), openclaw.packages);
        assert_eq!(
            openclaw.packages_for(false),
            ["appliance-openclaw", "appliance-openclaw-start", "cacert", "tini"]
        );
        assert_eq!(picoclaw.packages_for(false), picoclaw.packages);
        for layout in all() {
            assert!(layout.browser_packages.iter().all(|p| layout.packages.contains(p)));
        }
    }

    #[test]
    fn modes_print_as_docker_and_chmod_take_them() {
        assert_eq!(TMP.mode_octal(), "1777");
        assert_eq!(DOCKER_IN_GVISOR.writable[0].mode_octal(), "0710");
    }
}
