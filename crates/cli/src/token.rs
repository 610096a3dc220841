//! `imgpipe token`: a bearer token of the local issuer for `imgpipe serve`, signed with the
//! data directory's server key.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, bail};
use clap::Args;

use crate::serve::secret;

#[derive(Args)]
pub struct TokenArgs {
    /// Data directory whose server key (auth.key, made if missing) signs the token.
    #[arg(long, env = "IMGPIPE_DATA", default_value = "imgpipe-data")]
    pub data: PathBuf,
    /// Who the token is for: its `sub`, the owner of what it uploads.
    #[arg(long, value_name = "NAME")]
    pub user: String,
    /// Put the user in the admin group, which sees every image.
    #[arg(long)]
    pub admin: bool,
    /// How long the token is valid: e.g. 90s, 30m, 1h, 7d.
    #[arg(long, default_value = "1h", value_parser = parse_ttl)]
    pub ttl: Duration,
}

/// `90s`, `30m`, `1h`, `7d`, or plain seconds.
pub fn parse_ttl(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{text}`: expected a number and a unit, e.g. 30m or 1h"))?;
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("`{text}`: the unit must be s, m, h or d")),
    };
    match n.checked_mul(scale) {
        Some(0) => Err("the token must be valid for at least a second".to_string()),
        Some(secs) if secs <= 366 * 86_400 => Ok(Duration::from_secs(secs)),
        _ => Err(format!("`{text}`: at most a year")),
    }
}

pub fn run(args: TokenArgs) -> Result<()> {
    if !pipeline::keys::valid_segment(&args.user) {
        bail!(
            "--user `{}`: a user name becomes part of object keys, so it must be 1-128 of \
             A-Z a-z 0-9 - _ . and not start with a dot",
            args.user
        );
    }
    if pipeline::keys::reserved_owner(&args.user) {
        bail!(
            "--user `{}` is reserved: it owns the images dropped into the inbox or the bucket",
            args.user
        );
    }
    let key = secret::load_or_create(&args.data)?;
    outln!(
        "{}",
        api::auth::issue_local_token(&key, &args.user, args.admin, args.ttl)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls() {
        assert_eq!(parse_ttl("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_ttl("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_ttl("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_ttl("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_ttl("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert!(parse_ttl("0s").is_err());
        assert!(parse_ttl("1w").is_err());
        assert!(parse_ttl("h").is_err());
        assert!(parse_ttl("400d").is_err());
    }
}
