//! Grants that end by themselves: a route a human granted for a while (`bottle approve --for
//! 10m --uses 5`) serves until its time is up or its uses are spent, whichever comes first,
//! and is refused after with the time it ended.
//!
//! egress decides this itself at each request, so a grant ends on time even before the host
//! takes its route out. Uses are counted here, by grant id, outside the route table: a reload
//! (another approval) keeps the count. A restart of egress does not (the count is in memory);
//! the host takes a spent grant out when it next reloads.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::SystemTime;

/// A route's limit, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    /// The grant's id (the supervise request it answered).
    pub id: String,
    /// When it ends, with its RFC 3339 text.
    pub until: Option<(SystemTime, String)>,
    /// How many requests it serves.
    pub uses: Option<u32>,
}

impl Limit {
    /// `limit` from the routes file; the error names the field.
    pub fn parse(limit: &bottle_contract::egress::GrantLimit) -> Result<Limit, String> {
        if limit.id.is_empty() {
            return Err("grant.id: empty; every grant names the request it answered".into());
        }
        let until = limit
            .until
            .as_deref()
            .map(|t| parse_time(t).map(|at| (at, t.to_owned())))
            .transpose()
            .map_err(|e| format!("grant.until: {e}"))?;
        if limit.uses == Some(0) {
            return Err("grant.uses: 0 would serve nothing; leave the route out".into());
        }
        Ok(Limit {
            id: limit.id.clone(),
            until,
            uses: limit.uses,
        })
    }
}

/// `text` (RFC 3339) as a point in time.
pub fn parse_time(text: &str) -> Result<SystemTime, String> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map(SystemTime::from)
        .map_err(|e| format!("{text:?} is not an RFC 3339 time ({e})"))
}

/// `t` as RFC 3339 in UTC, to the second.
pub fn format_time(t: SystemTime) -> String {
    let t = time::OffsetDateTime::from(t)
        .replace_nanosecond(0)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// How many requests each grant has served, and when a spent one was spent.
#[derive(Debug, Default)]
pub struct Uses {
    served: Mutex<HashMap<String, (u32, Option<SystemTime>)>>,
}

impl Uses {
    /// Take one use of `limit` at `now`; otherwise the reason it has ended, naming the grant
    /// as `what` says (asked only then: a request that passes builds no text).
    pub fn take(
        &self,
        limit: &Limit,
        what: impl FnOnce() -> String,
        now: SystemTime,
    ) -> Result<(), String> {
        if let Some((until, text)) = &limit.until
            && now >= *until
        {
            return Err(format!("the grant for {} ended at {text}", what()));
        }
        let Some(max) = limit.uses else {
            return Ok(());
        };
        let mut served = self.served.lock().unwrap_or_else(|p| p.into_inner());
        let (count, spent) = served.entry(limit.id.clone()).or_default();
        if *count >= max {
            let at = spent.map_or_else(String::new, |t| format!(" at {}", format_time(t)));
            return Err(format!(
                "the grant for {} ended{at}: its {max} use{} were spent",
                what(),
                if max == 1 { "" } else { "s" }
            ));
        }
        *count += 1;
        if *count == max {
            *spent = Some(now);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limit(until: Option<&str>, uses: Option<u32>) -> Limit {
        Limit::parse(&bottle_contract::egress::GrantLimit {
            id: "r1".into(),
            until: until.map(str::to_owned),
            uses,
        })
        .unwrap()
    }

    #[test]
    fn a_grant_ends_at_its_time() {
        let l = limit(Some("2026-12-05T10:00:00Z"), None);
        let before = parse_time("2026-12-05T09:59:59Z").unwrap();
        let after = before + Duration::from_secs(1);
        let uses = Uses::default();
        assert!(uses.take(&l, || "x.com".into(), before).is_ok());
        assert_eq!(
            uses.take(&l, || "x.com".into(), after).unwrap_err(),
            "the grant for x.com ended at 2026-12-05T10:00:00Z"
        );
    }

    #[test]
    fn a_grant_ends_when_its_uses_are_spent_and_the_count_is_per_grant() {
        let l = limit(None, Some(2));
        let now = parse_time("2026-12-05T10:00:00.5Z").unwrap();
        let uses = Uses::default();
        assert!(uses.take(&l, || "x.com".into(), now).is_ok());
        assert!(uses.take(&l, || "x.com".into(), now).is_ok());
        assert_eq!(
            uses.take(&l, || "x.com".into(), now).unwrap_err(),
            "the grant for x.com ended at 2026-12-05T10:00:00Z: its 2 uses were spent"
        );
        let other = Limit {
            id: "r2".into(),
            ..l
        };
        assert!(uses.take(&other, || "x.com".into(), now).is_ok());
    }

    #[test]
    fn bad_limits_name_their_field() {
        let bad = |id: &str, until: Option<&str>, uses| {
            Limit::parse(&bottle_contract::egress::GrantLimit {
                id: id.into(),
                until: until.map(str::to_owned),
                uses,
            })
            .unwrap_err()
        };
        assert!(bad("", None, None).starts_with("grant.id"));
        assert!(bad("r", Some("tomorrow"), None).starts_with("grant.until"));
        assert!(bad("r", None, Some(0)).starts_with("grant.uses"));
    }
}
