//! Cron expressions read in a time zone: which ticks are due now, which comes next, which
//! fall in a range. Pure functions of the time they are given, so that every rule here is
//! tested without waiting for a clock.
//!
//! Expressions have five fields (minute to weekday) or six (seconds first), as croner
//! parses them; daylight-saving changes follow croner's rules: a tick in a skipped hour
//! fires just after the change, a tick in a repeated hour fires once.

use chrono::{DateTime, TimeZone};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds};
use sandflow::store::Catchup;

/// Why an expression or a time zone cannot make a schedule.
#[derive(Debug, thiserror::Error)]
pub enum CronError {
    #[error(
        "`{expression}` is not a cron expression ({reason}); write five fields \
         (minute hour day month weekday, as in `0 3 * * *`) or six with seconds first"
    )]
    Syntax { expression: String, reason: String },
    #[error("`{expression}` never fires")]
    Never { expression: String },
    #[error("`{0}` is not an IANA time zone name such as `UTC` or `Europe/Berlin`")]
    TimeZone(String),
    #[error("{count} or more ticks fall in the range; at most {max} may start runs at once")]
    TooMany { count: usize, max: usize },
}

/// A parsed expression and the zone its fields are read in.
#[derive(Debug, Clone)]
pub struct Expression {
    cron: Cron,
    zone: Tz,
}

impl Expression {
    /// Parses `expression` in the IANA time zone `zone`, refusing one that never fires.
    pub fn parse(expression: &str, zone: &str) -> Result<Self, CronError> {
        let zone: Tz = zone
            .parse()
            .map_err(|_| CronError::TimeZone(zone.to_owned()))?;
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .build()
            .parse(expression)
            .map_err(|e| CronError::Syntax {
                expression: expression.to_owned(),
                reason: e.to_string(),
            })?;
        let parsed = Self { cron, zone };
        // Searched from the epoch, a pattern that matches once a year or so still has a
        // tick; one that names the 30th of February has none.
        if parsed.next_after(0).is_none() {
            return Err(CronError::Never {
                expression: expression.to_owned(),
            });
        }
        Ok(parsed)
    }

    fn at(&self, ms: u64) -> Option<DateTime<Tz>> {
        self.zone
            .timestamp_millis_opt(i64::try_from(ms).ok()?)
            .single()
    }

    fn ms(time: &DateTime<Tz>) -> Option<u64> {
        u64::try_from(time.timestamp_millis()).ok()
    }

    /// The first tick strictly after `after_ms` (milliseconds since the Unix epoch).
    pub fn next_after(&self, after_ms: u64) -> Option<u64> {
        let next = self.cron.find_next_occurrence(&self.at(after_ms)?, false);
        next.ok().as_ref().and_then(Self::ms)
    }

    /// The last tick at or before `at_ms`.
    fn last_at(&self, at_ms: u64) -> Option<u64> {
        // Ticks fall on whole seconds: one at `at_ms` rounded down is at or before it.
        let second = self.at(at_ms - at_ms % 1000)?;
        let last = self.cron.find_previous_occurrence(&second, true);
        last.ok().as_ref().and_then(Self::ms)
    }

    /// The ticks after `settled_ms` and at or before `now_ms` that start runs under
    /// `catchup`, oldest first. The caller settles the schedule at the last tick due.
    pub fn due(&self, settled_ms: u64, now_ms: u64, catchup: Catchup) -> Vec<u64> {
        let Some(latest) = self.last_at(now_ms).filter(|&t| t > settled_ms) else {
            return Vec::new();
        };
        match catchup {
            Catchup::None if now_ms - latest > Catchup::ON_TIME_MS => Vec::new(),
            Catchup::None | Catchup::Latest => vec![latest],
            Catchup::All { max } => {
                // Walked back from the latest, so that a long downtime costs `max` steps,
                // not one per missed tick.
                let mut ticks = vec![latest];
                while ticks.len() < max as usize {
                    let before = ticks.last().copied().unwrap_or(0).checked_sub(1);
                    match before.and_then(|t| self.last_at(t)) {
                        Some(tick) if tick > settled_ms => ticks.push(tick),
                        _ => break,
                    }
                }
                ticks.reverse();
                ticks
            }
        }
    }

    /// The last tick `due` would settle at: the latest at or before `now_ms`.
    pub fn settles_at(&self, now_ms: u64) -> Option<u64> {
        self.last_at(now_ms)
    }

    /// Every tick from `from_ms` to `to_ms`, both included, oldest first; more than `max`
    /// is an error, so that a mistyped range does not start a million runs.
    pub fn between(&self, from_ms: u64, to_ms: u64, max: usize) -> Result<Vec<u64>, CronError> {
        let mut ticks = Vec::new();
        let mut cursor = from_ms.checked_sub(1);
        while let Some(tick) = cursor.and_then(|c| self.next_after(c)) {
            if tick > to_ms {
                break;
            }
            if ticks.len() == max {
                return Err(CronError::TooMany {
                    count: max + 1,
                    max,
                });
            }
            ticks.push(tick);
            cursor = Some(tick);
        }
        Ok(ticks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Milliseconds of a UTC date and time.
    fn utc(text: &str) -> u64 {
        let time = DateTime::parse_from_rfc3339(text).unwrap();
        time.timestamp_millis() as u64
    }

    const HOUR: u64 = 3_600_000;

    #[test]
    fn due_ticks_follow_the_catchup_policy() {
        let hourly = Expression::parse("0 * * * *", "UTC").unwrap();
        let settled = utc("2026-01-01T00:00:00Z");
        // Five ticks missed: 01:00 to 05:00; now is 05:30.
        let now = utc("2026-01-01T05:30:00Z");
        let hours = |hs: &[u64]| hs.iter().map(|h| settled + h * HOUR).collect::<Vec<_>>();
        assert_eq!(hourly.due(settled, now, Catchup::None), hours(&[]));
        assert_eq!(hourly.due(settled, now, Catchup::Latest), hours(&[5]));
        let all = |max| Catchup::All { max };
        assert_eq!(hourly.due(settled, now, all(10)), hours(&[1, 2, 3, 4, 5]));
        assert_eq!(hourly.due(settled, now, all(2)), hours(&[4, 5]));
        assert_eq!(hourly.settles_at(now), Some(settled + 5 * HOUR));

        // On time: every policy fires the tick that just passed, and only it.
        let on_time = settled + 5 * HOUR + 2_000;
        for policy in [Catchup::None, Catchup::Latest, all(10)] {
            let due = hourly.due(settled + 4 * HOUR, on_time, policy);
            assert_eq!(due, hours(&[5]), "{policy:?}");
        }
        // Settled at the last tick: nothing is due until the next.
        assert!(hourly.due(settled + 5 * HOUR, now, all(10)).is_empty());
    }

    #[test]
    fn fields_are_read_in_the_schedules_time_zone_across_daylight_saving() {
        let berlin = Expression::parse("0 3 * * *", "Europe/Berlin").unwrap();
        // 03:00 in Berlin is 01:00 UTC in summer, 02:00 UTC in winter.
        let summer = berlin.next_after(utc("2026-07-01T00:00:00Z"));
        assert_eq!(summer, Some(utc("2026-07-01T01:00:00Z")));
        let winter = berlin.next_after(utc("2026-01-01T00:00:00Z"));
        assert_eq!(winter, Some(utc("2026-01-01T02:00:00Z")));
        // 02:30 does not exist in Berlin on 29 March 2026: that tick fires once, at the
        // change, and the days around it keep their local time.
        let skipped = Expression::parse("30 2 * * *", "Europe/Berlin").unwrap();
        let ticks = skipped
            .between(utc("2026-03-28T00:00:00Z"), utc("2026-03-31T00:00:00Z"), 10)
            .unwrap();
        assert_eq!(ticks.len(), 3, "{ticks:?}");
        assert_eq!(ticks[0], utc("2026-03-28T01:30:00Z"));
        assert_eq!(ticks[2], utc("2026-03-30T00:30:00Z"));
    }

    #[test]
    fn seconds_are_an_optional_sixth_field() {
        let every_ten = Expression::parse("*/10 * * * * *", "UTC").unwrap();
        let t = utc("2026-01-01T00:00:01Z");
        assert_eq!(every_ten.next_after(t), Some(t + 9_000));
    }

    #[test]
    fn ranges_are_bounded_and_inclusive() {
        let daily = Expression::parse("0 0 * * *", "UTC").unwrap();
        let from = utc("2026-01-01T00:00:00Z");
        let to = utc("2026-01-03T00:00:00Z");
        assert_eq!(
            daily.between(from, to, 3).unwrap(),
            [from, from + 24 * HOUR, to]
        );
        assert!(matches!(
            daily.between(from, to, 2),
            Err(CronError::TooMany { max: 2, .. })
        ));
        assert!(daily.between(to, from, 3).unwrap().is_empty());
    }

    #[test]
    fn bad_expressions_and_zones_are_refused_with_what_to_write() {
        let syntax = Expression::parse("every day", "UTC").unwrap_err();
        assert!(syntax.to_string().contains("five fields"), "{syntax}");
        let never = Expression::parse("0 0 30 2 *", "UTC").unwrap_err();
        assert!(matches!(never, CronError::Never { .. }), "{never}");
        let zone = Expression::parse("0 3 * * *", "Mars/Olympus").unwrap_err();
        assert!(zone.to_string().contains("IANA"), "{zone}");
    }
}
