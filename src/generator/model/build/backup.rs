//! `[backup]`: the repository, the host files holding its secrets, the
//! schedule and the retention, each checked for what it is and for where
//! it lands (a JSON value, a Nix string, a systemd `Environment=` line and
//! restic's command line), so only conservative spellings pass.

use toml::Spanned;

use super::{Builder, span};
use crate::generator::model::STATE_DIR;
use crate::generator::model::backup::{
    Backup, DEFAULT_KEEP_DAILY, DEFAULT_KEEP_MONTHLY, DEFAULT_KEEP_WEEKLY, DEFAULT_SCHEDULE,
};

/// The most snapshots one `keep-*` may keep: far beyond any schedule's need,
/// small enough that a typo (`70000`) is caught.
const MAX_KEEP: u32 = 1000;
/// systemd's calendar shorthands (systemd.time(7)).
const SCHEDULE_KEYWORDS: &[&str] = &[
    "minutely",
    "hourly",
    "daily",
    "weekly",
    "monthly",
    "yearly",
    "annually",
    "quarterly",
    "semiannually",
];
const WEEKDAYS: &[&str] = &[
    "Mon",
    "Tue",
    "Wed",
    "Thu",
    "Fri",
    "Sat",
    "Sun",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

pub(super) fn resolve(b: &mut Builder) -> Option<Backup> {
    let spec = b.spec.backup.as_ref()?.get_ref();
    let repository = spec.repository.get_ref();
    if let Some(problem) = repository_problem(repository) {
        b.error(
            span(&spec.repository),
            format!("backup repository `{repository}` {problem}"),
            "use an absolute path (`/mnt/backup/appliance`), `sftp:user@host:/path` or `s3:https://host/bucket/path`",
        );
    }
    host_file(b, "password-file", &spec.password_file);
    if let Some(file) = &spec.environment_file {
        host_file(b, "environment-file", file);
    }
    let schedule = spec
        .schedule
        .as_ref()
        .map_or(DEFAULT_SCHEDULE, |s| s.get_ref().as_str());
    if let (Some(problem), Some(at)) = (schedule_problem(schedule), spec.schedule.as_ref()) {
        b.error(
            span(at),
            format!("backup schedule `{schedule}` {problem}"),
            "use a systemd calendar shorthand (`daily`, `hourly`) or `[weekday] [date] time`, e.g. `*-*-* 03:30`",
        );
    }
    let keep = |value: &Option<Spanned<u32>>, default: u32| value.as_ref().map_or(default, |v| *v.get_ref());
    let (keep_daily, keep_weekly, keep_monthly) = (
        keep(&spec.keep_daily, DEFAULT_KEEP_DAILY),
        keep(&spec.keep_weekly, DEFAULT_KEEP_WEEKLY),
        keep(&spec.keep_monthly, DEFAULT_KEEP_MONTHLY),
    );
    check_retention(b);
    if keep_daily + keep_weekly + keep_monthly == 0 {
        let at = b.spec.backup.as_ref().map(span).unwrap_or_default();
        b.error(
            at,
            "`[backup]` keeps no snapshot: `keep-daily`, `keep-weekly` and `keep-monthly` are all 0",
            "keep at least one, e.g. `keep-daily = 7`",
        );
    }
    Some(Backup {
        repository: repository.clone(),
        password_file: spec.password_file.get_ref().clone(),
        environment_file: spec.environment_file.as_ref().map(|f| f.get_ref().clone()),
        schedule: schedule.to_string(),
        keep_daily,
        keep_weekly,
        keep_monthly,
    })
}

fn check_retention(b: &mut Builder) {
    let Some(spec) = b.spec.backup.as_ref().map(Spanned::get_ref) else {
        return;
    };
    let too_many: Vec<(&str, &Spanned<u32>)> = [
        ("keep-daily", &spec.keep_daily),
        ("keep-weekly", &spec.keep_weekly),
        ("keep-monthly", &spec.keep_monthly),
    ]
    .into_iter()
    .filter_map(|(key, value)| value.as_ref().map(|v| (key, v)))
    .filter(|(_, value)| *value.get_ref() > MAX_KEEP)
    .collect();
    for (key, value) in too_many {
        b.error(
            span(value),
            format!(
                "`{key}` is {}, more than the {MAX_KEEP} snapshots it may keep",
                value.get_ref()
            ),
            format!("set `{key}` to at most {MAX_KEEP}"),
        );
    }
}

/// A file on the host that holds a secret: named by an absolute path, never
/// in the world-readable Nix store.
fn host_file(b: &mut Builder, key: &str, file: &Spanned<String>) {
    let path = file.get_ref();
    let problem = path_problem(path).or_else(|| {
        (path == "/nix/store" || path.starts_with("/nix/store/"))
            .then(|| "is in the Nix store, which every user of the host can read".to_string())
    });
    if let Some(problem) = problem {
        b.error(
            span(file),
            format!("backup `{key}` `{path}` {problem}"),
            format!(
                "name a root-only file on the host, e.g. `{key} = \"/root/backup-{}\"`; its contents never enter the spec",
                if key == "password-file" { "password" } else { "credentials" }
            ),
        );
    }
}

/// Why `path` is not an absolute path of plain characters, if it is not:
/// it lands unquoted in systemd's `Environment=` and restic's arguments.
pub fn path_problem(path: &str) -> Option<String> {
    if !path.starts_with('/') {
        return Some("is not an absolute path".into());
    }
    if let Some(bad) = path
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "._+-/".contains(*c)))
    {
        return Some(format!(
            "has the character {bad:?}; paths here may use letters, digits and `._+-/` only"
        ));
    }
    if path.split('/').any(|part| part == "..") {
        return Some("has a `..` component".into());
    }
    if path.len() > 1 && path.ends_with('/') || path.contains("//") {
        return Some("has an empty component (`//` or a trailing `/`)".into());
    }
    None
}

/// Why `repository` is not one of the three forms restic reaches without
/// a helper on the other side, if it is not.
pub fn repository_problem(repository: &str) -> Option<String> {
    if let Some(rest) = repository.strip_prefix("sftp:") {
        return sftp_problem(rest);
    }
    if let Some(rest) = repository.strip_prefix("s3:") {
        return s3_problem(rest);
    }
    if repository.starts_with('/') {
        if let Some(problem) = path_problem(repository) {
            return Some(problem);
        }
        if repository == STATE_DIR || repository.starts_with(&format!("{STATE_DIR}/")) {
            return Some(format!(
                "is inside the appliance's state directory `{STATE_DIR}`, which the backup itself reads"
            ));
        }
        return None;
    }
    Some("is not a local absolute path, an `sftp:` or an `s3:` repository".into())
}

/// `user@host:/path` (restic's `sftp:` form without a URL).
fn sftp_problem(rest: &str) -> Option<String> {
    let Some((login, path)) = rest.split_once(':') else {
        return Some("has no `:/path` after the host (`sftp:user@host:/path`)".into());
    };
    let (user, host) = login.split_once('@').unwrap_or(("", login));
    if !user.is_empty() && !is_plain_name(user, "._-") {
        return Some(format!("has the user `{user}`, which is not a plain login name"));
    }
    if let Some(problem) = host_problem(host) {
        return Some(problem);
    }
    path_problem(path).map(|p| format!("has the path `{path}`, which {p}"))
}

/// `https://host[:port]/bucket[/path]`; plain `http` would send the
/// credentials in the clear.
fn s3_problem(rest: &str) -> Option<String> {
    let Some(url) = rest.strip_prefix("https://") else {
        return Some("is not `s3:https://host/bucket/path` (only HTTPS endpoints are accepted)".into());
    };
    let Some((authority, path)) = url.split_once('/') else {
        return Some("names no bucket (`s3:https://host/bucket/path`)".into());
    };
    let host = match authority.rsplit_once(':') {
        Some((host, port)) => {
            if port.parse::<u16>().map_or(true, |p| p == 0) {
                return Some(format!("has the port `{port}`, which is not a port number"));
            }
            host
        }
        None => authority,
    };
    if let Some(problem) = host_problem(host) {
        return Some(problem);
    }
    let bucket = path.split('/').next().unwrap_or_default();
    let bucket_ok = (3..=63).contains(&bucket.len())
        && is_plain_name(bucket, ".-")
        && bucket.chars().all(|c| !c.is_ascii_uppercase());
    if !bucket_ok {
        return Some(format!(
            "has the bucket `{bucket}`; S3 buckets are 3 to 63 lowercase letters, digits, `.` and `-`"
        ));
    }
    path_problem(&format!("/{path}")).map(|p| format!("has the path `/{path}`, which {p}"))
}

/// A DNS name or IPv4 address that cannot be read as an option (`-oProxyCommand`).
fn host_problem(host: &str) -> Option<String> {
    let ok = !host.is_empty() && host.len() <= 253 && !host.starts_with(['-', '.']) && is_plain_name(host, ".-");
    (!ok).then(|| format!("has the host `{host}`, which is not a plain host name or address"))
}

fn is_plain_name(text: &str, extra: &str) -> bool {
    !text.is_empty() && text.chars().all(|c| c.is_ascii_alphanumeric() || extra.contains(c))
}

/// Why `schedule` is not a calendar expression this appliance accepts, if
/// it is not. Conservative: systemd's shorthands, or up to three
/// space-separated parts (weekdays, date, time) of digits and `*-:/,.~`;
/// no time zone. `systemd-analyze calendar` on the host is the last word.
pub fn schedule_problem(schedule: &str) -> Option<String> {
    if SCHEDULE_KEYWORDS.contains(&schedule) {
        return None;
    }
    if schedule.len() > 64 {
        return Some("is longer than 64 characters".into());
    }
    let parts: Vec<&str> = schedule.split(' ').collect();
    if parts.len() > 3 || parts.iter().any(|p| p.is_empty()) {
        return Some("is not up to three parts separated by single spaces".into());
    }
    for (index, part) in parts.iter().enumerate() {
        let weekdays = part
            .split([',', '.'])
            .filter(|d| !d.is_empty())
            .all(|d| WEEKDAYS.contains(&d));
        if weekdays && part.chars().any(char::is_alphabetic) {
            if index != 0 {
                return Some(format!("has the weekdays `{part}` after the date or time"));
            }
            continue;
        }
        let calendar = part.chars().all(|c| c.is_ascii_digit() || "*-:/,.~".contains(c))
            && part.chars().any(|c| c.is_ascii_digit() || c == '*');
        if !calendar {
            return Some(format!(
                "has the part `{part}`, which is not a weekday, a date or a time"
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repositories_of_the_three_forms_pass() {
        for ok in [
            "/mnt/backup/appliance",
            "sftp:backup@nas.example.org:/srv/restic/magi",
            "sftp:nas:/srv/restic",
            "s3:https://s3.eu-central-1.amazonaws.com/magi-backups/hub",
            "s3:https://minio.lan:9000/backups",
        ] {
            assert_eq!(repository_problem(ok), None, "{ok}");
        }
    }

    #[test]
    fn repositories_that_could_inject_or_leak_are_refused() {
        for bad in [
            "relative/path",
            "/var/lib/appliance/backup",
            "/mnt/back up",
            "/mnt/%h",
            "/mnt/$HOME",
            "/mnt/../etc",
            "sftp:-oProxyCommand=sh@host:/x",
            "sftp:user@-oProxyCommand=x:/x",
            "sftp:user@host",
            "sftp:user@host:relative",
            "s3:http://minio.lan/bucket",
            "s3:https://minio.lan",
            "s3:https://minio.lan/Bucket",
            "s3:https://minio.lan:0/bucket",
            "rest:https://host/",
            "b2:bucket:path",
            "",
        ] {
            assert!(repository_problem(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn schedules_are_systemd_shorthands_or_plain_calendar_parts() {
        for ok in [
            "daily",
            "hourly",
            "*-*-* 03:30",
            "Mon..Fri 02:00",
            "Sat,Sun *-*-* 04:00:00",
            "*:0/15",
        ] {
            assert_eq!(schedule_problem(ok), None, "{ok}");
        }
        for bad in [
            "",
            "dayly",
            "03:30 Mon",
            "*-*-* 03:30 Europe/Berlin",
            "*-*-*  03:30",
            "daily; rm -rf /",
            "%H:00",
            "a b c d",
        ] {
            assert!(schedule_problem(bad).is_some(), "{bad}");
        }
    }
}
