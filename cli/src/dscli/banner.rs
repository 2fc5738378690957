//! The banner line (dscli-spec.md §1.6 [C]):
//! `Date/Time: July 11, 2018 8:14:30 PM GMT IBM DSCLI Version: 0.1.0 DS: IBM.2107-75FA120`.
//! The clock is injectable for tests: `FLASHTRACK_CLOCK` = unix seconds; the zone is the
//! system's (the `TZ` variable), its abbreviation from the tz database.

use jiff::Timestamp;
use jiff::tz::TimeZone;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// Now, or the injected clock.
pub fn now() -> Timestamp {
    std::env::var("FLASHTRACK_CLOCK")
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .and_then(|s| Timestamp::from_second(s).ok())
        .unwrap_or_else(Timestamp::now)
}

/// The banner for `image` (`-` when none is in context).
pub fn line(at: Timestamp, tz: TimeZone, image: Option<&str>) -> String {
    let z = at.to_zoned(tz);
    let abbr = z.time_zone().to_offset_info(at).abbreviation().to_string();
    let h = z.hour();
    let (h12, ampm) = match h {
        0 => (12, "AM"),
        1..=11 => (h, "AM"),
        12 => (12, "PM"),
        _ => (h - 12, "PM"),
    };
    format!(
        "Date/Time: {} {}, {} {}:{:02}:{:02} {} {} IBM DSCLI Version: {} DS: {}",
        MONTHS[(z.month() - 1) as usize],
        z.day(),
        z.year(),
        h12,
        z.minute(),
        z.second(),
        ampm,
        abbr,
        VERSION,
        image.unwrap_or("-")
    )
}

/// The banner now, in the system zone.
pub fn current(image: Option<&str>) -> String {
    line(now(), TimeZone::system(), image)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_shape() {
        let at = Timestamp::from_second(1_531_339_470).unwrap();
        assert_eq!(
            line(at, TimeZone::UTC, None),
            format!("Date/Time: July 11, 2018 8:04:30 PM UTC IBM DSCLI Version: {VERSION} DS: -")
        );
        let at = Timestamp::from_second(1_531_267_200).unwrap(); // 2018-07-11 00:00:00 UTC
        assert!(
            line(at, TimeZone::UTC, Some("IBM.2107-75FA120")).starts_with("Date/Time: July 11, 2018 12:00:00 AM UTC")
        );
    }

    #[test]
    fn named_zone_abbreviation() {
        let Ok(tz) = TimeZone::get("Europe/Paris") else {
            return;
        };
        let at = Timestamp::from_second(1_531_339_470).unwrap();
        assert!(line(at, tz, None).starts_with("Date/Time: July 11, 2018 10:04:30 PM CEST IBM"));
    }
}
