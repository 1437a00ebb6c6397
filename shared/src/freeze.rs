//! Change freezes (`freeze` of a registration): weekly windows in a named time zone and absolute
//! date ranges in which no new rollout starts. Pure: `Freeze::at(now)` says whether `now` is
//! frozen, why, and until when (windows that touch or overlap are followed to their common end).
//!
//! Weekly windows are local wall-clock times of the IANA zone (`chrono-tz`), so a window keeps
//! its local hours across daylight-saving changes; a window may wrap over the week's end.

use std::str::FromStr;

use chrono::{DateTime, Datelike, Duration, NaiveTime, TimeZone, Timelike, Utc, Weekday};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Freeze {
    /// An IANA time zone name (`Europe/Berlin`) for the weekly windows.
    pub timezone: String,
    #[serde(default)]
    pub weekly: Vec<Weekly>,
    #[serde(default)]
    pub dates: Vec<Dates>,
}

/// `FRI 18:00` to `MON 08:00`, local time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Weekly {
    pub from: String,
    pub to: String,
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dates {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    #[serde(default)]
    pub reason: Option<String>,
}

/// `now` is inside a freeze: why, and when the rollout may start.
#[derive(Clone, Debug, PartialEq)]
pub struct Frozen {
    pub until: DateTime<Utc>,
    pub window: String,
}

const MINUTES_PER_WEEK: i64 = 7 * 24 * 60;

impl Freeze {
    /// Why the freeze cannot be used, naming the field.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        Tz::from_str(&self.timezone).map_err(|_| {
            (
                "freeze.timezone",
                format!(
                    "`{}` is not an IANA time zone name (e.g. Europe/Berlin, America/New_York, UTC)",
                    self.timezone
                ),
            )
        })?;
        if self.weekly.len() + self.dates.len() > 50 {
            return Err(("freeze", "at most 50 windows".to_string()));
        }
        for w in &self.weekly {
            let from = week_minute(&w.from).map_err(|m| ("freeze.weekly.from", m))?;
            let to = week_minute(&w.to).map_err(|m| ("freeze.weekly.to", m))?;
            if from == to {
                return Err((
                    "freeze.weekly",
                    format!("`{}` to `{}` is an empty window", w.from, w.to),
                ));
            }
            check_reason(&w.reason)?;
        }
        for d in &self.dates {
            if d.from >= d.to {
                return Err((
                    "freeze.dates",
                    format!("`from` {} is not before `to` {}", d.from, d.to),
                ));
            }
            check_reason(&d.reason)?;
        }
        Ok(())
    }

    /// Whether `now` is frozen; `None` when it is not (or the freeze does not parse, which
    /// registration refuses).
    pub fn at(&self, now: DateTime<Utc>) -> Option<Frozen> {
        let tz = Tz::from_str(&self.timezone).ok()?;
        let first = self.containing(tz, now)?;
        // Follow windows that start where (or before) the previous one ends.
        let mut until = first.0;
        for _ in 0..100 {
            match self.containing(tz, until) {
                Some((end, _)) if end > until => until = end,
                _ => break,
            }
        }
        Some(Frozen {
            until,
            window: first.1,
        })
    }

    /// A window containing `t`: its end and its description.
    fn containing(&self, tz: Tz, t: DateTime<Utc>) -> Option<(DateTime<Utc>, String)> {
        for d in &self.dates {
            if d.from <= t && t < d.to {
                let what = format!(
                    "{} to {}",
                    d.from.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    d.to.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                );
                return Some((d.to, described(&what, &d.reason)));
            }
        }
        let local = t.with_timezone(&tz);
        let minute = i64::from(local.weekday().num_days_from_monday()) * 1440
            + i64::from(local.hour()) * 60
            + i64::from(local.minute());
        for w in &self.weekly {
            let (Ok(from), Ok(to)) = (week_minute(&w.from), week_minute(&w.to)) else {
                continue;
            };
            let inside = if from < to {
                from <= minute && minute < to
            } else {
                minute >= from || minute < to
            };
            if !inside {
                continue;
            }
            let ahead = (to - minute).rem_euclid(MINUTES_PER_WEEK);
            let end_local = local.naive_local() - Duration::seconds(i64::from(local.second()))
                + Duration::minutes(ahead);
            let end = match tz.from_local_datetime(&end_local) {
                chrono::LocalResult::Single(e) => e,
                chrono::LocalResult::Ambiguous(early, _) => early,
                // The end falls in a daylight-saving gap: the first instant after it.
                chrono::LocalResult::None => {
                    match tz.from_local_datetime(&(end_local + Duration::hours(1))) {
                        chrono::LocalResult::Single(e) | chrono::LocalResult::Ambiguous(e, _) => e,
                        chrono::LocalResult::None => continue,
                    }
                }
            };
            let what = format!("weekly {} to {} {}", w.from, w.to, self.timezone);
            return Some((end.with_timezone(&Utc), described(&what, &w.reason)));
        }
        None
    }
}

fn described(what: &str, reason: &Option<String>) -> String {
    match reason {
        Some(r) => format!("{what} ({r})"),
        None => what.to_string(),
    }
}

fn check_reason(reason: &Option<String>) -> Result<(), (&'static str, String)> {
    match reason {
        Some(r) if r.chars().count() > 200 => {
            Err(("freeze.reason", "at most 200 characters".to_string()))
        }
        _ => Ok(()),
    }
}

/// `DAY HH:MM` as minutes since Monday 00:00.
fn week_minute(text: &str) -> Result<i64, String> {
    let bad = || {
        format!("`{text}` is not `DAY HH:MM` (DAY one of MON…SUN, 24-hour time, e.g. `FRI 18:00`)")
    };
    let (day, time) = text.trim().split_once(' ').ok_or_else(bad)?;
    let day = match day.to_ascii_uppercase().as_str() {
        "MON" => Weekday::Mon,
        "TUE" => Weekday::Tue,
        "WED" => Weekday::Wed,
        "THU" => Weekday::Thu,
        "FRI" => Weekday::Fri,
        "SAT" => Weekday::Sat,
        "SUN" => Weekday::Sun,
        _ => return Err(bad()),
    };
    let time = NaiveTime::parse_from_str(time.trim(), "%H:%M").map_err(|_| bad())?;
    Ok(i64::from(day.num_days_from_monday()) * 1440
        + i64::from(time.hour()) * 60
        + i64::from(time.minute()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn weekend() -> Freeze {
        serde_json::from_str(
            r#"{ "timezone": "Europe/Berlin",
                 "weekly": [{ "from": "FRI 18:00", "to": "MON 08:00" }],
                 "dates": [{ "from": "2026-12-23T00:00:00Z", "to": "2027-01-02T00:00:00Z",
                             "reason": "year end" }] }"#,
        )
        .unwrap()
    }

    #[test]
    fn a_weekly_window_holds_in_local_time_and_ends_at_its_local_end() {
        let f = weekend();
        assert!(f.check().is_ok());
        // Friday 2026-11-20 17:30 UTC is 18:30 in Berlin (CET, UTC+1): frozen until Monday
        // 08:00 Berlin = 07:00 UTC.
        let frozen = f.at(at("2026-11-20T17:30:00Z")).unwrap();
        assert_eq!(frozen.until, at("2026-11-23T07:00:00Z"));
        assert!(
            frozen
                .window
                .contains("FRI 18:00 to MON 08:00 Europe/Berlin")
        );
        // 16:59 UTC is 17:59 in Berlin: not yet.
        assert_eq!(f.at(at("2026-11-20T16:59:00Z")), None);
        // Monday 07:00 UTC exactly: over.
        assert_eq!(f.at(at("2026-11-23T07:00:00Z")), None);
        // Sunday night: frozen (the window wraps over the week's end).
        assert!(f.at(at("2026-11-22T23:00:00Z")).is_some());
    }

    #[test]
    fn daylight_saving_keeps_the_local_hours() {
        let f = weekend();
        // Summer (CEST, UTC+2): Friday 18:00 Berlin is 16:00 UTC.
        assert!(f.at(at("2026-07-03T16:00:00Z")).is_some());
        assert!(f.at(at("2026-07-03T15:59:00Z")).is_none());
        // A window over the change to winter time (2026-10-25): ends Monday 08:00 CET.
        let frozen = f.at(at("2026-10-24T12:00:00Z")).unwrap();
        assert_eq!(frozen.until, at("2026-10-26T07:00:00Z"));
    }

    #[test]
    fn a_date_range_holds_and_windows_that_touch_are_followed_to_their_common_end() {
        let f = weekend();
        let frozen = f.at(at("2026-12-24T12:00:00Z")).unwrap();
        assert!(frozen.window.contains("year end"), "{}", frozen.window);
        // 2027-01-02 is a Saturday: the weekend window carries on to Monday 08:00 Berlin.
        assert_eq!(frozen.until, at("2027-01-04T07:00:00Z"));
    }

    #[test]
    fn bad_freezes_are_refused_naming_the_field() {
        let mut f = weekend();
        f.timezone = "Mars/Olympus".into();
        assert_eq!(f.check().unwrap_err().0, "freeze.timezone");
        let mut f = weekend();
        f.weekly[0].from = "FRIDAY 18".into();
        assert_eq!(f.check().unwrap_err().0, "freeze.weekly.from");
        let mut f = weekend();
        f.weekly[0].to = "FRI 18:00".into();
        assert_eq!(f.check().unwrap_err().0, "freeze.weekly");
        let mut f = weekend();
        f.dates[0].to = f.dates[0].from;
        assert_eq!(f.check().unwrap_err().0, "freeze.dates");
    }
}
