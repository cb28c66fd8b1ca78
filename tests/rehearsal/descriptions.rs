//! The image descriptions the rehearsal builds from. INTERIM: until the
//! library's single image description lands, these mirror generated/images/*.nix
//! by hand; the rehearsal then takes them from the library instead.

use agent_appliance::model::{CODE_RUNNER_IMAGE, DIND_VERSION, HERMES_VERSION, OPENCLAW_VERSION};

pub struct ImageUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
}

pub struct ImageDir {
    pub path: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

pub struct ImageSpec {
    pub tag: String,
    /// Which rootfs of scripts/rehearsal-rootfs.sh carries its programs.
    pub flavor: String,
    pub user: Option<ImageUser>,
    pub run_as: String,
    pub dirs: Vec<ImageDir>,
    pub env: Vec<(String, String)>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub workdir: Option<String>,
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

const CERTS: (&str, &str) = ("SSL_CERT_FILE", "/etc/ssl/certs/ca-bundle.crt");

pub fn image_specs() -> Vec<ImageSpec> {
    vec![
        ImageSpec {
            tag: format!("agent-appliance/openclaw:{OPENCLAW_VERSION}"),
            flavor: "openclaw".into(),
            user: Some(ImageUser {
                name: "node".into(),
                uid: 1000,
                gid: 1000,
                home: "/home/node".into(),
            }),
            run_as: "1000:1000".into(),
            dirs: vec![ImageDir {
                path: "/home/node/.openclaw".into(),
                mode: 0o700,
                uid: 1000,
                gid: 1000,
            }],
            env: vec![(CERTS.0.into(), CERTS.1.into())],
            entrypoint: strings(&["tini", "-s", "--", "openclaw", "gateway", "run"]),
            cmd: Vec::new(),
            workdir: None,
        },
        ImageSpec {
            tag: format!("agent-appliance/hermes:{HERMES_VERSION}"),
            flavor: "hermes".into(),
            user: Some(ImageUser {
                name: "hermes".into(),
                uid: 10000,
                gid: 10000,
                home: "/opt/data".into(),
            }),
            run_as: "10000:10000".into(),
            dirs: vec![ImageDir {
                path: "/opt/data".into(),
                mode: 0o700,
                uid: 10000,
                gid: 10000,
            }],
            env: vec![
                (CERTS.0.into(), CERTS.1.into()),
                ("AGENT_BROWSER_EXECUTABLE_PATH".into(), "/bin/chromium".into()),
            ],
            entrypoint: strings(&["tini", "-s", "--", "hermes", "gateway", "run"]),
            cmd: Vec::new(),
            workdir: None,
        },
        ImageSpec {
            tag: format!("agent-appliance/docker-in-gvisor:{DIND_VERSION}"),
            flavor: "dind".into(),
            user: None,
            run_as: "0:0".into(),
            dirs: Vec::new(),
            env: vec![(CERTS.0.into(), CERTS.1.into())],
            entrypoint: strings(&["tini", "-s", "--"]),
            cmd: Vec::new(),
            workdir: None,
        },
        ImageSpec {
            tag: CODE_RUNNER_IMAGE.into(),
            flavor: "code-runner".into(),
            user: None,
            run_as: "0:0".into(),
            dirs: vec![ImageDir {
                path: "/workspace".into(),
                mode: 0o755,
                uid: 0,
                gid: 0,
            }],
            env: vec![(CERTS.0.into(), CERTS.1.into())],
            entrypoint: Vec::new(),
            cmd: strings(&["bash"]),
            workdir: Some("/workspace".into()),
        },
    ]
}
