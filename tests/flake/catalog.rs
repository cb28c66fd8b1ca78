//! Option paths and package attributes we emit, against the NixOS catalog.

#[allow(unused_imports)]
use super::*;

/// Options the catalog lacks but nixpkgs declares, each with the file that
/// declares it (read at the stated path; the option names were checked
/// against that file where it is in the public index).
const OPTIONS_NOT_IN_CATALOG: &[(&str, &str)] = &[
    // The egress layer (src/generator/render/egress.rs); read from nixpkgs' module
    // sources with the search tool.
    (
        "networking.nftables.enable",
        "nixos/modules/services/networking/nftables.nix",
    ),
    (
        "networking.nftables.flushRuleset",
        "nixos/modules/services/networking/nftables.nix",
    ),
    // Synapse's database (src/generator/render/host.rs), read in nixpkgs'
    // services/databases/postgresql.nix.
    (
        "services.postgresql.enable",
        "nixos/modules/services/databases/postgresql.nix",
    ),
    (
        "services.postgresql.ensureDatabases",
        "nixos/modules/services/databases/postgresql.nix",
    ),
    (
        "services.postgresql.ensureUsers",
        "nixos/modules/services/databases/postgresql.nix",
    ),
    (
        "services.postgresql.initdbArgs",
        "nixos/modules/services/databases/postgresql.nix",
    ),
    (
        "services.postgresql.settings",
        "nixos/modules/services/databases/postgresql.nix",
    ),
    // An attribute set of sysctl keys (free-form below; a key holds dots,
    // which this extractor splits on).
    ("boot.kernel.sysctl", "nixos/modules/config/sysctl.nix"),
    // Its own example is the same substitution (a user the build-time
    // ruleset check lacks).
    (
        "networking.nftables.preCheckRuleset",
        "nixos/modules/services/networking/nftables.nix",
    ),
    (
        "networking.nftables.tables.<name>.family",
        "nixos/modules/services/networking/nftables.nix",
    ),
    (
        "networking.nftables.tables.<name>.content",
        "nixos/modules/services/networking/nftables.nix",
    ),
    ("services.squid.enable", "nixos/modules/services/networking/squid.nix"),
    (
        "services.squid.configText",
        "nixos/modules/services/networking/squid.nix",
    ),
    (
        "services.dnsmasq.enable",
        "nixos/modules/services/networking/dnsmasq.nix",
    ),
    (
        "services.dnsmasq.resolveLocalQueries",
        "nixos/modules/services/networking/dnsmasq.nix",
    ),
    (
        "services.dnsmasq.settings",
        "nixos/modules/services/networking/dnsmasq.nix",
    ),
    ("assertions", "nixos/modules/misc/assertions.nix"),
    ("warnings", "nixos/modules/misc/assertions.nix"),
    (
        "systemd.tmpfiles.rules",
        "nixos/modules/system/boot/systemd/tmpfiles.nix",
    ),
    (
        "services.xserver.videoDrivers",
        "nixos/modules/services/x11/xserver.nix",
    ),
    (
        "networking.wireguard.interfaces.<name>.ips",
        "nixos/modules/services/networking/wireguard.nix",
    ),
    (
        "networking.wireguard.interfaces.<name>.listenPort",
        "nixos/modules/services/networking/wireguard.nix",
    ),
    (
        "networking.wireguard.interfaces.<name>.privateKeyFile",
        "nixos/modules/services/networking/wireguard.nix",
    ),
    (
        "networking.wireguard.interfaces.<name>.peers",
        "nixos/modules/services/networking/wireguard.nix",
    ),
    (
        "networking.wireguard.interfaces.<name>.generatePrivateKeyFile",
        "nixos/modules/services/networking/wireguard.nix",
    ),
    // Whole sets of units, made from `appliance.sandboxes`
    // (modules/sandboxes.nix); the catalog lists their `<name>` options.
    ("systemd.services", "nixos/modules/system/boot/systemd.nix"),
    ("systemd.paths", "nixos/modules/system/boot/systemd.nix"),
    ("systemd.paths.<name>.description", "nixos/lib/systemd-unit-options.nix"),
    (
        "systemd.targets.<name>.description",
        "nixos/lib/systemd-unit-options.nix",
    ),
    ("systemd.targets.<name>.wantedBy", "nixos/lib/systemd-unit-options.nix"),
    ("systemd.targets.<name>.requires", "nixos/lib/systemd-unit-options.nix"),
    ("systemd.targets.<name>.after", "nixos/lib/systemd-unit-options.nix"),
    ("systemd.paths.<name>.wantedBy", "nixos/lib/systemd-unit-options.nix"),
    ("systemd.paths.<name>.pathConfig", "nixos/lib/systemd-unit-options.nix"),
    // The admins' web client (modules/webclient.nix), from nixpkgs' nginx
    // module and its virtual host and location options.
    (
        "services.nginx.enable",
        "nixos/modules/services/web-servers/nginx/default.nix",
    ),
    (
        "services.nginx.virtualHosts.<name>.listen",
        "nixos/modules/services/web-servers/nginx/vhost-options.nix",
    ),
    (
        "services.nginx.virtualHosts.<name>.root",
        "nixos/modules/services/web-servers/nginx/vhost-options.nix",
    ),
    (
        "services.nginx.virtualHosts.<name>.locations.<name>",
        "nixos/modules/services/web-servers/nginx/vhost-options.nix",
    ),
    (
        "services.nginx.virtualHosts.<name>.locations.<name>.tryFiles",
        "nixos/modules/services/web-servers/nginx/location-options.nix",
    ),
    ("_module.args", "lib/modules.nix"),
    ("boot.kernelParams", "nixos/modules/system/boot/kernel.nix"),
    (
        "boot.loader.grub.enable",
        "nixos/modules/system/boot/loader/grub/grub.nix",
    ),
    (
        "boot.loader.generic-extlinux-compatible.enable",
        "nixos/modules/system/boot/loader/generic-extlinux-compatible/default.nix",
    ),
    ("virtualisation.memorySize", "nixos/modules/virtualisation/qemu-vm.nix"),
    ("virtualisation.cores", "nixos/modules/virtualisation/qemu-vm.nix"),
    // Backups (modules/backup.nix), read in nixpkgs'
    // nixos/modules/services/backup/restic.nix with the search tool.
    (
        "services.restic.backups.<name>.initialize",
        "nixos/modules/services/backup/restic.nix",
    ),
    (
        "services.restic.backups.<name>.paths",
        "nixos/modules/services/backup/restic.nix",
    ),
    (
        "services.restic.backups.<name>.pruneOpts",
        "nixos/modules/services/backup/restic.nix",
    ),
    (
        "services.restic.backups.<name>.backupPrepareCommand",
        "nixos/modules/services/backup/restic.nix",
    ),
    (
        "services.restic.backups.<name>.backupCleanupCommand",
        "nixos/modules/services/backup/restic.nix",
    ),
    (
        "services.restic.backups.<name>.timerConfig.OnCalendar",
        "nixos/modules/services/backup/restic.nix (systemd.timer(5))",
    ),
    (
        "services.restic.backups.<name>.timerConfig.Persistent",
        "nixos/modules/services/backup/restic.nix (systemd.timer(5))",
    ),
    (
        "services.restic.backups.<name>.timerConfig.RandomizedDelaySec",
        "nixos/modules/services/backup/restic.nix (systemd.timer(5))",
    ),
    // `environment.etc."appliance/backup.json".source`: the name's dot
    // splits it into two segments here.
    (
        "environment.etc.appliance/backup.json.source",
        "nixos/modules/system/etc/etc.nix",
    ),
];

/// Package attributes the catalog lacks, with the nixpkgs file defining
/// them (or this repository's overlay).
const PACKAGES_NOT_IN_CATALOG: &[(&str, &str)] = &[
    ("agent-appliance", "nix/overlay.nix (this repository)"),
    ("cinny", "pkgs/by-name/ci/cinny/package.nix"),
    ("restic", "pkgs/by-name/re/restic/package.nix"),
    // The appliance CA (modules/egress.nix): `openssl = openssl_3`.
    (
        "openssl",
        "pkgs/top-level/all-packages.nix (pkgs/development/libraries/openssl/default.nix)",
    ),
    ("searxng", "pkgs/by-name/se/searxng/package.nix"),
    ("appliance-openclaw", "nix/overlay.nix (this repository)"),
    ("appliance-picoclaw", "nix/overlay.nix (this repository)"),
    ("appliance-hermes", "nix/overlay.nix (this repository)"),
    ("appliance-code-runner", "nix/overlay.nix (this repository)"),
    ("appliance-dind-start", "nix/overlay.nix (this repository)"),
    ("appliance-hermes-start", "nix/overlay.nix (this repository)"),
    ("appliance-openclaw-start", "nix/overlay.nix (this repository)"),
    ("appliance-webextract", "nix/overlay.nix (this repository)"),
    (
        "python3Packages",
        "pkgs/top-level/python-packages.nix (trafilatura: pkgs/development/python-modules/trafilatura/default.nix)",
    ),
    ("writers", "pkgs/build-support/writers/default.nix (writePython3Bin)"),
    (
        "bashInteractive",
        "pkgs/top-level/all-packages.nix (bash.override { interactive = true; })",
    ),
    (
        "writeShellApplication",
        "pkgs/build-support/trivial-builders/default.nix",
    ),
    ("dockerTools", "pkgs/build-support/docker/default.nix"),
    ("testers", "pkgs/build-support/testers/default.nix"),
    ("runCommand", "pkgs/build-support/trivial-builders/default.nix"),
    ("mkShell", "pkgs/build-support/mkshell/default.nix"),
    ("stdenv", "pkgs/stdenv/generic/make-derivation.nix"),
    ("wireguard-tools", "pkgs/by-name/wi/wireguard-tools/package.nix"),
    ("coreutils", "pkgs/tools/misc/coreutils/default.nix"),
    (
        "docker-client",
        "pkgs/top-level/all-packages.nix (docker.override { clientOnly = true; })",
    ),
    ("nixfmt", "pkgs/by-name/ni/nixfmt/package.nix"),
    ("nix", "pkgs/tools/package-management/nix/default.nix"),
    ("cargo", "pkgs/development/compilers/rust/default.nix"),
    ("clippy", "pkgs/development/compilers/rust/default.nix"),
    ("rustfmt", "pkgs/development/compilers/rust/default.nix"),
    ("rustPlatform", "pkgs/development/compilers/rust/default.nix"),
    ("buildGoModule", "pkgs/build-support/go/module.nix"),
    ("fetchFromGitHub", "pkgs/build-support/fetchgithub/default.nix"),
    ("fetchurl", "pkgs/build-support/fetchurl/default.nix"),
    (
        "buildNpmPackage",
        "pkgs/build-support/node/build-npm-package/default.nix",
    ),
    ("importNpmLock", "pkgs/build-support/node/import-npm-lock/default.nix"),
    ("python313", "pkgs/development/interpreters/python/default.nix"),
    ("makeWrapper", "pkgs/build-support/setup-hooks/make-wrapper.sh"),
    ("autoPatchelfHook", "pkgs/build-support/setup-hooks/auto-patchelf.sh"),
    ("zlib", "pkgs/development/libraries/zlib/default.nix"),
    ("writeText", "pkgs/build-support/trivial-builders/default.nix"),
    ("nodejs_26", "pkgs/development/web/nodejs/v26.nix"),
    (
        "pypaInstallHook",
        "pkgs/development/interpreters/python/hooks/default.nix (python.pkgs.pypaInstallHook)",
    ),
];

fn catalog() -> Option<Value> {
    let beside = root().join("../shared/nixos-catalog.json");
    let path = if beside.is_file() {
        beside
    } else if let Some(path) = std::env::var_os("APPLIANCE_NIXOS_CATALOG") {
        PathBuf::from(path)
    } else {
        assert!(
            !in_ci(),
            "the NixOS catalog is required in CI: put shared/ beside the repository or set APPLIANCE_NIXOS_CATALOG"
        );
        eprintln!("\n!!! SKIPPED: no ../shared/nixos-catalog.json and no APPLIANCE_NIXOS_CATALOG !!!\n");
        return None;
    };
    Some(read_json(&path))
}

/// Nix source as tokens: identifiers, strings (their text, for quoted
/// attribute names) and punctuation. Comments and string interpolations
/// are dropped; this is enough to follow attribute paths, not to evaluate.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Token {
    Ident(String),
    Str(String),
    Punct(char),
    Other,
}

pub(super) fn tokenize(text: &str) -> Vec<Token> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    // Skips an interpolation `${ ... }` starting at `i` (at `$`).
    fn skip_interpolation(chars: &[char], mut i: usize) -> usize {
        let mut depth = 0;
        while i < chars.len() {
            match chars[i] {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        return i + 1;
                    }
                }
                _ => {}
            }
            i += 1;
        }
        i
    }
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '#' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && chars.get(i + 1) == Some(&'*') {
            i += 2;
            while i + 1 < chars.len() && !(chars[i] == '*' && chars[i + 1] == '/') {
                i += 1;
            }
            i += 2;
        } else if c == '"' {
            let mut text = String::new();
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    text.push(chars[i + 1]);
                    i += 2;
                } else if chars[i] == '$' && chars.get(i + 1) == Some(&'{') {
                    i = skip_interpolation(&chars, i);
                } else {
                    text.push(chars[i]);
                    i += 1;
                }
            }
            i += 1;
            tokens.push(Token::Str(text));
        } else if c == '\'' && chars.get(i + 1) == Some(&'\'') {
            i += 2;
            while i < chars.len() {
                if chars[i] == '\'' && chars.get(i + 1) == Some(&'\'') {
                    // `'''`, `''$` and `''\` are escapes inside the string.
                    if matches!(chars.get(i + 2), Some('\'' | '$' | '\\')) {
                        i += 3;
                        continue;
                    }
                    i += 2;
                    break;
                } else if chars[i] == '$' && chars.get(i + 1) == Some(&'{') {
                    i = skip_interpolation(&chars, i);
                } else {
                    i += 1;
                }
            }
            tokens.push(Token::Other);
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || matches!(chars[i], '_' | '-' | '\'')) {
                i += 1;
            }
            tokens.push(Token::Ident(chars[start..i].iter().collect()));
        } else if "{}[]();=.:,@?".contains(c) {
            tokens.push(Token::Punct(c));
            i += 1;
        } else if c == '$' && chars.get(i + 1) == Some(&'{') {
            // Outside a string, `${ ... }` can only be an attribute's name
            // chosen at evaluation (`interfaces.${cfg.interface}`): any name,
            // as `<name>` in an option path.
            i = skip_interpolation(&chars, i);
            tokens.push(Token::Ident("<name>".into()));
        } else {
            i += 1;
            tokens.push(Token::Other);
        }
    }
    tokens
}

/// Follows attribute paths through nested attribute sets and records each
/// path whose value is not itself an attribute set literal. A value counts
/// as nested when it is `{ ... }`, possibly behind `lib.mkIf <cond>`,
/// `lib.optionalAttrs <cond>`, `lib.mkDefault`, `lib.mkForce` or a function
/// pattern (`{ ... }: { ... }`).
struct PathCollector {
    tokens: Vec<Token>,
    paths: BTreeSet<String>,
    /// Paths declared by `lib.mkOption` with an `attrsOf` type: each
    /// `<path>.<name>` holds a value of the option's element type.
    attrs_of: BTreeSet<String>,
}

impl PathCollector {
    fn punct(&self, i: usize, c: char) -> bool {
        self.tokens.get(i) == Some(&Token::Punct(c))
    }

    /// Index after the bracket group opening at `i`.
    fn skip_group(&self, mut i: usize) -> usize {
        let mut depth = 0i32;
        while i < self.tokens.len() {
            match self.tokens[i] {
                Token::Punct('{' | '[' | '(') => depth += 1,
                Token::Punct('}' | ']' | ')') => {
                    depth -= 1;
                    if depth == 0 {
                        return i + 1;
                    }
                }
                _ => {}
            }
            i += 1;
        }
        i
    }

    /// Index of the `;` ending the value that starts at `i`.
    fn value_end(&self, mut i: usize) -> usize {
        while i < self.tokens.len() && !self.punct(i, ';') {
            if matches!(self.tokens[i], Token::Punct('{' | '[' | '(')) {
                i = self.skip_group(i);
            } else {
                i += 1;
            }
        }
        i
    }

    /// Where the attribute set literal of a value starting at `i` opens,
    /// if the value is one.
    fn nested_start(&self, mut i: usize) -> Option<usize> {
        let ident = |i: usize| match self.tokens.get(i) {
            Some(Token::Ident(name)) => Some(name.as_str()),
            _ => None,
        };
        // lib.mkIf COND / lib.optionalAttrs COND / lib.mkDefault / lib.mkForce
        if ident(i) == Some("lib") && self.punct(i + 1, '.') {
            match ident(i + 2) {
                Some("mkIf" | "optionalAttrs") => {
                    i += 3;
                    if self.punct(i, '(') {
                        i = self.skip_group(i);
                    } else {
                        // A condition like `cfg.enable`.
                        i += 1;
                        while self.punct(i, '.') && ident(i + 1).is_some() {
                            i += 2;
                        }
                    }
                }
                Some("mkDefault" | "mkForce") => i += 3,
                Some("mkOverride") => i += 4,
                _ => return None,
            }
        }
        if !self.punct(i, '{') {
            return None;
        }
        // A function pattern `{ a, b, ... }:` followed by its body.
        let after = self.skip_group(i);
        if self.punct(after, ':') {
            return self.punct(after + 1, '{').then_some(after + 1);
        }
        Some(i)
    }

    /// Reads the attribute set whose `{` is at `open`; returns the index
    /// after its `}`.
    fn attrset(&mut self, open: usize, prefix: &[String]) -> usize {
        let mut i = open + 1;
        while i < self.tokens.len() && !self.punct(i, '}') {
            if self.tokens[i] == Token::Ident("inherit".into()) {
                i = self.value_end(i) + 1;
                continue;
            }
            // An attribute path: names separated by dots, then `=`.
            let mut path = prefix.to_vec();
            let start = i;
            while let Token::Ident(name) | Token::Str(name) = &self.tokens[i] {
                path.push(name.clone());
                i += 1;
                if self.punct(i, '.') {
                    i += 1;
                } else {
                    break;
                }
            }
            if i == start || !self.punct(i, '=') {
                // Not a binding (e.g. a `let` body); skip one token.
                i = start + 1;
                continue;
            }
            i += 1;
            let end = self.value_end(i);
            match self.nested_start(i) {
                Some(open) if open < end => {
                    self.attrset(open, &path);
                    self.modules_in(open, end);
                }
                _ => {
                    if self.declares_attrs_of(i, end) {
                        self.attrs_of.insert(path.join("."));
                    }
                    self.paths.insert(path.join("."));
                    self.modules_in(i, end);
                }
            }
            i = end + 1;
        }
        i + 1
    }

    /// Whether the value in `from..to` is `lib.mkOption { ... }` of a type
    /// `lib.types.attrsOf ...`.
    fn declares_attrs_of(&self, from: usize, to: usize) -> bool {
        let ident = |name: &str| Token::Ident(name.into());
        let value = &self.tokens[from..to];
        value.starts_with(&[ident("lib"), Token::Punct('.'), ident("mkOption")])
            && value
                .windows(3)
                .any(|w| w == [ident("types"), Token::Punct('.'), ident("attrsOf")])
    }

    /// NixOS modules written inline in `modules = [ { ... } ... ]`.
    fn modules_in(&mut self, from: usize, to: usize) {
        let mut i = from;
        while i + 2 < to {
            if self.tokens[i] == Token::Ident("modules".into()) && self.punct(i + 1, '=') && self.punct(i + 2, '[') {
                let close = self.skip_group(i + 2);
                let mut j = i + 3;
                while j < close - 1 {
                    if self.punct(j, '{') {
                        j = self.attrset(j, &[]);
                    } else {
                        j += 1;
                    }
                }
                i = close;
            } else {
                i += 1;
            }
        }
    }
}

/// Attribute paths a Nix file defines: the module body after any function
/// headers and `let ... in` (or, for files that build modules inline, the
/// modules in `modules = [ ... ]` lists).
pub(super) fn defined_paths(text: &str) -> BTreeSet<String> {
    collect_paths(text).paths
}

/// The options a Nix file declares with an `attrsOf` type (without the
/// `options.` prefix): `<option>.<name>.*` are values, not options.
fn attrs_of_options(text: &str) -> BTreeSet<String> {
    collect_paths(text)
        .attrs_of
        .into_iter()
        .filter_map(|p| p.strip_prefix("options.").map(str::to_string))
        .collect()
}

fn collect_paths(text: &str) -> PathCollector {
    let tokens = tokenize(text);
    let mut collector = PathCollector {
        tokens: tokens.clone(),
        paths: BTreeSet::new(),
        attrs_of: BTreeSet::new(),
    };
    let mut i = 0;
    loop {
        // Function headers: `{ ... }:`, `{ ... }@args:` or `name:`.
        if collector.punct(i, '{') {
            let mut after = collector.skip_group(i);
            if collector.punct(after, '@') && matches!(tokens.get(after + 1), Some(Token::Ident(_))) {
                after += 2;
            }
            if collector.punct(after, ':') {
                i = after + 1;
                continue;
            }
        }
        if matches!(tokens.get(i), Some(Token::Ident(_))) && collector.punct(i + 1, ':') {
            i += 2;
            continue;
        }
        if tokens.get(i) == Some(&Token::Ident("let".into())) {
            let mut depth = 0;
            while i < tokens.len() {
                match &tokens[i] {
                    Token::Ident(word) if word == "let" => depth += 1,
                    Token::Ident(word) if word == "in" => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            i += 1;
            continue;
        }
        break;
    }
    // Skip a leading function application (`pkgs.testers.runNixOSTest {`).
    while matches!(tokens.get(i), Some(Token::Ident(_) | Token::Punct('.'))) {
        i += 1;
    }
    if collector.punct(i, '{') {
        collector.attrset(i, &[]);
    }
    collector.modules_in(0, tokens.len());
    collector
}

/// NixOS option paths a file sets, by kind of file.
fn option_paths(file: &Path, text: &str) -> BTreeSet<String> {
    let relative = file.strip_prefix(root()).unwrap().to_string_lossy().into_owned();
    if relative == "modules/lib.nix" {
        // Not a module: the option shapes the modules share (the units of
        // `after`/`requires`/`wants`, lists of strings); its `type` and
        // `default` are an option's fields.
        return BTreeSet::new();
    }
    defined_paths(text)
        .into_iter()
        .filter_map(|path| {
            if relative.ends_with("nix/checks/hub.nix") || relative.ends_with("nix/checks/hub-scenario.nix") {
                // Only the test node's configuration is a NixOS module.
                return path
                    .strip_prefix("nodes.machine.")
                    .filter(|p| *p != "imports")
                    .map(str::to_string);
            }
            if relative == "flake.nix" || relative.ends_with("nix/hosts.nix") {
                // Outputs are not options; inline modules are collected
                // without a prefix and start with an option namespace.
                let first = path.split('.').next().unwrap();
                return ["nixpkgs", "appliance"].contains(&first).then_some(path);
            }
            let path = path.strip_prefix("config.").map_or(path.clone(), str::to_string);
            (!path.starts_with("options.") && path != "imports").then_some(path)
        })
        .collect()
}

/// Whether `path` is `option`, with `<name>`/`*` matching any one segment.
fn matches_option(path: &[&str], option: &[&str]) -> bool {
    path.len() == option.len()
        && path
            .iter()
            .zip(option)
            .all(|(p, o)| p == o || *o == "<name>" || *o == "*")
}

/// Types whose values are free-form attribute sets: paths below such an
/// option are keys of its value, not options.
fn is_freeform(kind: &str) -> bool {
    [
        "freeformType",
        "attrsOf types.str",
        "unitOption",
        "configType",
        "formats.json",
        "formats.yaml",
    ]
    .iter()
    .any(|k| kind.contains(k))
}

pub(super) fn module_files() -> Vec<PathBuf> {
    // The hand-written modules: the nixpkgs options they set from ours.
    let mut files = nix_files(&root().join("modules"));
    files.extend(nix_files(&root().join("nix/targets")));
    files.push(root().join("nix/checks/hub.nix"));
    files.push(root().join("nix/checks/hub-scenario.nix"));
    files.push(root().join("nix/checks/hub-node.nix"));
    files.push(root().join("nix/checks/sleepers.nix"));
    files.push(root().join("nix/hosts.nix"));
    files.push(root().join("flake.nix"));
    files
}

#[test]
fn the_extractor_follows_modules_as_written() {
    let text = r#"
{ config, lib, ... }:
let x = { a = 1; }; in
{
  imports = [ ];
  options.appliance.enable = lib.mkEnableOption "x";
  config = lib.mkIf (config.appliance.enable && x.a == 1) {
    services.openssh = {
      enable = true;
      settings.PasswordAuthentication = false;
    };
    networking.firewall.interfaces.br-appliance = { allowedTCPPorts = [ 1 ]; };
    virtualisation.docker.daemon.settings = s // { runtimes = { }; };
    systemd.services.x.script = ''
      echo ${"{"} a = b; }
    '';
    "quoted.name" = lib.mkDefault "v";
    networking.wireguard.interfaces = lib.optionalAttrs x.a { ${x.a}.ips = [ ]; };
  };
}
"#;
    let paths: Vec<String> = defined_paths(text).into_iter().collect();
    assert_eq!(
        paths,
        [
            "config.networking.firewall.interfaces.br-appliance.allowedTCPPorts".to_string(),
            "config.networking.wireguard.interfaces.<name>.ips".into(),
            "config.quoted.name".into(),
            "config.services.openssh.enable".into(),
            "config.services.openssh.settings.PasswordAuthentication".into(),
            "config.systemd.services.x.script".into(),
            "config.virtualisation.docker.daemon.settings".into(),
            "imports".into(),
            "options.appliance.enable".into(),
        ]
    );
}

/// The option paths the catalog (and OPTIONS_NOT_IN_CATALOG, and our own
/// module) declares, each with whether values below it are free-form; and
/// the renamed or removed ones.
struct KnownOptions {
    options: Vec<(Vec<String>, bool)>,
    removed: BTreeSet<String>,
}

/// Our own options, as the hand-written modules of modules/ declare them,
/// each with whether values below it are free-form: an `attrsOf` option's
/// values sit below a name of the user's (`appliance.serviceSecrets.searxng.file`);
/// the module system types them, so any path below `<option>.<name>` is
/// accepted.
fn our_options() -> Vec<(Vec<String>, bool)> {
    let files = nix_files(&root().join("modules"));
    let declared: Vec<String> = files
        .iter()
        .flat_map(|file| defined_paths(&read(file)))
        .filter_map(|p| p.strip_prefix("options.").map(str::to_string))
        .collect();
    for option in ["appliance.enable", "appliance.host", "appliance.warden.plan"] {
        assert!(
            declared.iter().any(|d| d == option),
            "{option} not found in {declared:?}"
        );
    }
    let attrs_of: Vec<String> = files.iter().flat_map(|file| attrs_of_options(&read(file))).collect();
    for option in ["appliance.serviceSecrets", "appliance.sandboxes"] {
        assert!(
            attrs_of.iter().any(|o| o == option),
            "{option} not found among the attrsOf options {attrs_of:?}"
        );
    }
    let mut options: Vec<(Vec<String>, bool)> = declared
        .iter()
        .map(|path| (path.split('.').map(str::to_string).collect(), false))
        .collect();
    for path in attrs_of {
        let mut segments: Vec<String> = path.split('.').map(str::to_string).collect();
        segments.push("<name>".into());
        options.push((segments, true));
    }
    options
}

impl KnownOptions {
    fn load(catalog: &Value) -> KnownOptions {
        let mut options: Vec<(Vec<String>, bool)> = catalog["options"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| {
                let path = o["path"].as_str().unwrap();
                let kind = o["type"].as_str().unwrap_or_default();
                (path.split('.').map(str::to_string).collect(), is_freeform(kind))
            })
            .collect();
        for (path, _file) in OPTIONS_NOT_IN_CATALOG {
            // RFC 42 `settings` options, unit sections and module arguments
            // are free-form: keys below are config.
            let freeform = path.ends_with(".settings")
                || path.ends_with(".pathConfig")
                || *path == "_module.args"
                || *path == "boot.kernel.sysctl";
            options.push((path.split('.').map(str::to_string).collect(), freeform));
        }
        options.extend(our_options());
        let removed = crate::support::json_field_strings(&catalog["renamed_or_removed"], "from");
        KnownOptions { options, removed }
    }

    /// Whether `path` is a declared option (or below a free-form one) and
    /// not renamed or removed.
    fn accepts(&self, path: &str) -> bool {
        let segments: Vec<&str> = path.split('.').collect();
        let ok = self.options.iter().any(|(option, freeform)| {
            let option: Vec<&str> = option.iter().map(String::as_str).collect();
            matches_option(&segments, &option)
                || (*freeform && segments.len() > option.len() && matches_option(&segments[..option.len()], &option))
        });
        let renamed = self.removed.iter().any(|r| {
            let r: Vec<&str> = r.split('.').collect();
            segments.len() >= r.len() && matches_option(&segments[..r.len()], &r)
        });
        ok && !renamed
    }
}

#[test]
fn every_option_we_emit_is_in_the_nixos_catalog() {
    let Some(catalog) = catalog() else {
        return;
    };
    let known = KnownOptions::load(&catalog);
    let mut unknown = BTreeMap::new();
    let mut checked = 0;
    for file in module_files() {
        for path in option_paths(&file, &read(&file)) {
            checked += 1;
            if !known.accepts(&path) {
                unknown
                    .entry(path)
                    .or_insert_with(Vec::new)
                    .push(file.strip_prefix(root()).unwrap().display().to_string());
            }
        }
    }
    assert!(checked > 100, "the extractor found only {checked} option paths");
    assert!(
        unknown.is_empty(),
        "option paths that are not in ../shared/nixos-catalog.json (or are renamed/removed there); \
         fix the name, or add it to OPTIONS_NOT_IN_CATALOG with the nixpkgs file declaring it:\n{unknown:#?}"
    );
}

/// The generated host options are option values of modules/ only: every
/// path they set is one of our declared options (or below an `attrsOf`
/// one's name), so Rust decides and modules/ alone writes nixpkgs options.
/// (`every_option_we_emit_is_in_the_nixos_catalog` checks the modules'
/// own paths against nixpkgs.)
#[test]
fn the_generated_host_options_set_only_our_options() {
    let known = KnownOptions {
        options: our_options(),
        removed: BTreeSet::new(),
    };
    let files = generated_host_options();
    assert!(files.len() >= 5, "found only {files:?}");
    for file in files {
        let paths = json_option_paths(&file);
        for expected in [
            "appliance.docker.enable",
            "appliance.sandboxes",
            "appliance.firewall.allowedTCPPorts",
        ] {
            assert!(
                paths.iter().any(|p| p.starts_with(expected)),
                "{} sets no {expected}: {paths:#?}",
                file.display()
            );
        }
        let foreign: Vec<&String> = paths.iter().filter(|p| !known.accepts(p)).collect();
        assert!(
            foreign.is_empty(),
            "{} sets what is not an option of modules/: {foreign:#?}",
            file.display()
        );
    }
}

/// nixosModules.default is a library module: none of modules/ (nor, by
/// the test above, a generated host) sets `system.stateVersion`, which is
/// the machine's own (nix/hosts.nix sets it for the flake's new machines).
#[test]
fn the_library_module_leaves_the_state_version_to_the_machine() {
    let files = nix_files(&root().join("modules"));
    assert!(files.len() >= 10, "found only {files:?}");
    for file in files {
        let paths = option_paths(&file, &read(&file));
        assert!(
            !paths.iter().any(|p| p.starts_with("system.stateVersion")),
            "{} sets system.stateVersion",
            file.display()
        );
    }
    let hosts = read(&root().join("nix/hosts.nix"));
    assert!(
        hosts.contains("system.stateVersion = lib.mkIf (host.target != \"nixos\")"),
        "nix/hosts.nix must leave an existing host's state version alone"
    );
}

/// `pkgs.<attr>` references.
pub(super) fn package_attrs(text: &str) -> BTreeSet<String> {
    let tokens = tokenize(text);
    tokens
        .windows(3)
        .filter_map(|w| match w {
            [Token::Ident(pkgs), Token::Punct('.'), Token::Ident(attr)] if pkgs == "pkgs" => Some(attr.clone()),
            _ => None,
        })
        .collect()
}

/// The arguments of a `callPackage`d file's `{ ... }:` header.
fn call_package_args(text: &str) -> BTreeSet<String> {
    let tokens = tokenize(text);
    let close = tokens.iter().position(|t| *t == Token::Punct('}')).unwrap();
    tokens[1..close]
        .iter()
        .filter_map(|t| match t {
            Token::Ident(name) => Some(name.clone()),
            _ => None,
        })
        // Our own arguments (nix/overlay.nix passes them) and default
        // values, not packages.
        .filter(|name| !["lib", "null", "bundledPlugins"].contains(&name.as_str()) && !name.ends_with("ource"))
        .collect()
}

#[test]
fn every_package_we_use_is_in_the_nixos_catalog() {
    let Some(catalog) = catalog() else {
        return;
    };
    let mut known: BTreeSet<String> = catalog["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["exists"].as_bool() != Some(false))
        .map(|p| p["attr"].as_str().unwrap().to_string())
        .collect();
    let removed: BTreeSet<String> = catalog["renamed_or_removed"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["from"].as_str()?.strip_prefix("pkgs.").map(str::to_string))
        .collect();
    known.extend(PACKAGES_NOT_IN_CATALOG.iter().map(|(attr, _)| attr.to_string()));

    let mut used = BTreeMap::new();
    // The hand-written Nix (modules/ among it) and the image descriptions.
    let mut files = hand_written_nix();
    files.extend(generated_images());
    for file in &files {
        let mut attrs = packages_of(file);
        if file.parent().is_some_and(|p| p.ends_with("nix/packages")) {
            attrs.extend(call_package_args(&read(file)));
        }
        for attr in attrs {
            used.entry(attr)
                .or_insert_with(BTreeSet::new)
                .insert(file.strip_prefix(root()).unwrap().display().to_string());
        }
    }
    assert!(used.len() > 20, "found only {} package attributes", used.len());
    let unknown: BTreeMap<_, _> = used
        .into_iter()
        .filter(|(attr, _)| !known.contains(attr) || removed.contains(attr))
        .collect();
    assert!(
        unknown.is_empty(),
        "package attributes not in ../shared/nixos-catalog.json (or removed there); fix the name, \
         or add it to PACKAGES_NOT_IN_CATALOG with the nixpkgs file defining it:\n{unknown:#?}"
    );
}

/// nvproxy matches the host's driver version exactly: the `nvidiaPackages`
/// attribute the GPU hosts use must, in the catalog's nixpkgs, have a version
/// the shipped runsc lists; otherwise every GPU host fails evaluation at the
/// generated assertion (as `legacy_580`, 580.173.02, did).
#[test]
fn the_gpu_hosts_driver_is_on_the_shipped_nvproxy_list() {
    use agent_appliance::generator::render::{NVIDIA_PACKAGE, NVPROXY_DRIVERS};
    let Some(catalog) = catalog() else {
        return;
    };
    let version = catalog["nvidia_packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["attr"] == NVIDIA_PACKAGE)
        .unwrap_or_else(|| panic!("nvidiaPackages.{NVIDIA_PACKAGE} is not in the catalog"))["version"]
        .as_str()
        .unwrap_or_else(|| panic!("the catalog has no version for nvidiaPackages.{NVIDIA_PACKAGE}"))
        .to_string();
    assert!(
        NVPROXY_DRIVERS.contains(&version.as_str()),
        "nvidiaPackages.{NVIDIA_PACKAGE} is {version}, not on the shipped runsc's nvproxy list {NVPROXY_DRIVERS:?}"
    );
    let hub = read_json(&root().join("generated/hosts/hub/options.json"));
    assert_eq!(
        hub["appliance"]["nvidia"]["package"], NVIDIA_PACKAGE,
        "the hub's options do not use nvidiaPackages.{NVIDIA_PACKAGE}"
    );
    let module = read(&root().join("modules/nvidia.nix"));
    assert!(
        module.contains("nvidiaPackages.${cfg.package} or"),
        "modules/nvidia.nix does not take the driver from nvidiaPackages.<package>"
    );
}
