//! Made-up but plausible engagement: a pure function of (seed, Tweet, type, hour).
//!
//! Each Tweet draws a profile from its ID: its size (peak impressions per hour, over four
//! orders of magnitude), how fast its burst decays, the hour of day its audience is awake,
//! whether it carries media or video. Impressions follow a burst after posting that decays
//! over hours to days, a long tail over months, and a daily rhythm; engagements are a small
//! share of impressions and every other type a share of engagements. Each hour's count is
//! drawn from a hash, so any hour can be computed alone and always gives the same answer.

use chrono::{DateTime, Utc};
use engagement::time::hour_number;
use engagement::{EngagementType, HourlyCounts, TweetId};

/// The engagement model at one instant: counts are zero before each Tweet's creation hour
/// and after `now`. An hour's count grows to its final value as the hour ages: it shows
/// `floor(final * min(1, age / (1 + settle_hours) hours))`, where `age` is `now` minus the
/// hour's start, so with `settle_hours` 0 the hour in progress holds the share of the hour
/// that has passed and every past hour is final.
#[derive(Debug, Clone, Copy)]
pub struct Model {
    /// Varies the counts; the same seed gives the same counts.
    pub seed: u64,
    /// The instant the counts are shown as of.
    pub now: DateTime<Utc>,
    /// How many hours after its end an hour's count keeps growing to its final value, as the
    /// real API's counts settle late.
    pub settle_hours: u32,
}

/// A well-mixed 64-bit hash step (splitmix64's finalizer).
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A uniform draw in `[0, 1)` from a hash.
pub fn unit(x: u64) -> f64 {
    (mix(x) >> 11) as f64 / (1u64 << 53) as f64
}

struct Profile {
    peak: f64,
    decay_hours: f64,
    tail: f64,
    awake_hour: f64,
    engagement_rate: f64,
    has_media: bool,
    has_video: bool,
}

impl Profile {
    fn of(seed: u64, tweet: TweetId) -> Profile {
        let base = mix(seed ^ tweet.0.wrapping_mul(0xA24B_AED4_963E_E407));
        let u = |i: u64| unit(base ^ i.wrapping_mul(0x9FB2_1C65_1E98_DF25));
        Profile {
            peak: 10f64.powf(0.5 + 4.0 * u(1)),
            decay_hours: 2.0 + 40.0 * u(2),
            tail: 0.002 + 0.02 * u(3),
            awake_hour: 24.0 * u(4),
            engagement_rate: 0.005 + 0.06 * u(5),
            has_media: u(6) < 0.5,
            has_video: u(7) < 0.3,
        }
    }
}

/// Each type's share of engagements (impressions and engagements are drawn on their own).
fn share_of_engagements(ty: EngagementType, p: &Profile) -> f64 {
    use EngagementType as T;
    match ty {
        T::Favorites => 0.30,
        T::Retweets => 0.08,
        T::QuoteTweets => 0.01,
        T::Replies => 0.03,
        T::DetailExpands => 0.25,
        T::UrlClicks => 0.10,
        T::HashtagClicks => 0.02,
        T::PermalinkClicks => 0.02,
        T::AppInstallAttempts => 0.002,
        T::AppOpens => 0.003,
        T::EmailTweet => 0.001,
        T::UserFollows => 0.01,
        T::UserProfileClicks => 0.05,
        T::MediaEngagements if p.has_media => 0.15,
        _ => 0.0,
    }
}

impl Model {
    /// Whether `video_views` are reported for `tweet` (younger than 1800 days now).
    pub fn video_views_supported(&self, tweet: TweetId) -> bool {
        tweet.reports_video_views_at(self.now)
    }

    fn noise(&self, tweet: TweetId, salt: u64, hour: i64) -> f64 {
        0.5 + unit(
            self.seed
                ^ tweet.0.rotate_left(17)
                ^ salt.wrapping_mul(0xD6E8_FEB8_6659_FD93)
                ^ (hour as u64).wrapping_mul(0xCA5A_8263_9512_1157),
        )
    }

    fn impressions(&self, p: &Profile, tweet: TweetId, age_hours: f64, hour: i64, rhythm: f64) -> f64 {
        let decays = age_hours / p.decay_hours;
        // Past 60 decay times the burst (< 1e-26) is below half an ulp of the tail, so adding
        // it changes nothing: skipping exp() gives the same count, faster.
        let burst = if decays > 60.0 { 0.0 } else { (-decays).exp() };
        let tail = p.tail / (1.0 + age_hours / (24.0 * 30.0));
        (p.peak * (burst + tail) * rhythm * self.noise(tweet, 1, hour)).floor()
    }
}

impl HourlyCounts for Model {
    fn fill(&self, tweet: TweetId, ty: EngagementType, start: DateTime<Utc>, out: &mut [u64]) {
        let p = Profile::of(self.seed, tweet);
        let born = hour_number(tweet.created_at());
        let now_secs = self.now.timestamp();
        let now_hour = hour_number(self.now);
        // An hour is final once this many seconds have passed since its start.
        let settle_secs = 3600 * (1 + i64::from(self.settle_hours));
        let video = ty == EngagementType::VideoViews && p.has_video && self.video_views_supported(tweet);
        let share = share_of_engagements(ty, &p);
        let first_hour = hour_number(start);
        // The daily rhythm by hour of day: the audience is awake around `awake_hour`.
        let rhythm: [f64; 24] = std::array::from_fn(|hod| {
            1.0 + 0.6 * (std::f64::consts::TAU * (hod as f64 - p.awake_hour) / 24.0).cos()
        });
        for (i, slot) in out.iter_mut().enumerate() {
            let hour = first_hour + i as i64;
            if hour < born || hour > now_hour {
                *slot = 0;
                continue;
            }
            let age = (hour - born) as f64;
            let imp = self.impressions(&p, tweet, age, hour, rhythm[hour.rem_euclid(24) as usize]);
            let eng = (imp * p.engagement_rate * self.noise(tweet, 2, hour)).floor();
            let value = match ty {
                EngagementType::Impressions => imp,
                EngagementType::Engagements => eng,
                EngagementType::VideoViews if video => (imp * 0.2 * self.noise(tweet, 3, hour)).floor(),
                EngagementType::MediaViews if p.has_media => (imp * 0.3 * self.noise(tweet, 4, hour)).floor(),
                _ => (eng * share * self.noise(tweet, 5 + ty.index() as u64, hour)).floor(),
            };
            // The share of the final count shown, from the hour's age alone so any hour can
            // still be computed alone. Whole seconds, as with `settle_hours` 0 this must stay
            // the in-progress hour's share of the hour passed.
            let age_secs = now_secs - hour * 3600;
            let value = if age_secs < settle_secs {
                (value * (age_secs as f64 / settle_secs as f64)).floor()
            } else {
                value
            };
            *slot = value as u64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use engagement::time::parse_instant;

    fn model() -> Model {
        Model { seed: 7, now: parse_instant("2024-01-01T00:30:00Z").unwrap(), settle_hours: 0 }
    }

    fn series(m: &Model, tweet: TweetId, ty: EngagementType, start: &str, hours: usize) -> Vec<u64> {
        let mut out = vec![u64::MAX; hours];
        m.fill(tweet, ty, parse_instant(start).unwrap(), &mut out);
        out
    }

    #[test]
    fn zero_before_creation_and_after_now() {
        let m = model();
        let tweet = TweetId::minted_at(parse_instant("2023-12-30T10:15:00Z").unwrap());
        let s = series(&m, tweet, EngagementType::Impressions, "2023-12-30T08:00:00Z", 48);
        assert_eq!(&s[..2], &[0, 0], "before creation");
        assert!(s[2..8].iter().sum::<u64>() > 0, "the burst after posting");
        assert_eq!(&s[41..], &[0; 7], "after now (the hour in progress is 40)");
    }

    #[test]
    fn any_hour_alone_equals_the_same_hour_in_a_series() {
        let m = model();
        let tweet = TweetId::minted_at(parse_instant("2023-06-01T00:00:00Z").unwrap());
        for ty in EngagementType::ALL {
            let whole = series(&m, tweet, ty, "2023-06-01T00:00:00Z", 100);
            for i in [0usize, 13, 99] {
                let t = parse_instant("2023-06-01T00:00:00Z").unwrap() + engagement::time::HOUR * i as i32;
                let mut one = [0];
                m.fill(tweet, ty, t, &mut one);
                assert_eq!(one[0], whole[i], "{ty} hour {i}");
            }
        }
    }

    #[test]
    fn hours_settle_to_their_final_count_over_settle_hours() {
        let now = parse_instant("2024-01-10T12:30:00Z").unwrap();
        let (settled, settling) =
            (Model { seed: 7, now, settle_hours: 0 }, Model { seed: 7, now, settle_hours: 48 });
        let ty = EngagementType::Impressions;
        let start = "2024-01-07T00:00:00Z";
        // Hour 0 of the series is 2024-01-07T00, 84.5 hours before now; hour 74 is 10 hours old.
        let ten_hours_old = 84 - 10;
        // A Tweet posted at hour 0 with counts big enough to see a share of them.
        let (tweet, finals) = (0..100u64)
            .map(|k| TweetId(TweetId::minted_at(parse_instant(start).unwrap()).0 + k))
            .map(|tweet| (tweet, series(&settled, tweet, ty, start, 90)))
            .find(|(_, finals)| finals[ten_hours_old] > 100)
            .unwrap();
        let shown = series(&settling, tweet, ty, start, 90);
        assert!(shown[ten_hours_old] < finals[ten_hours_old], "10 hours old, still settling");
        let sixty_hours_old = 84 - 60;
        assert!(finals[sixty_hours_old] > 0);
        assert_eq!(shown[sixty_hours_old], finals[sixty_hours_old], "60 hours old is final");
        assert_eq!(&shown[85..], &[0; 5], "after now");
        // Moving the clock only ever grows a count.
        let later =
            series(&Model { now: now + chrono::Duration::hours(24), ..settling }, tweet, ty, start, 90);
        assert!(shown.iter().zip(&later).all(|(a, b)| a <= b), "{shown:?} then {later:?}");
        assert!(later[ten_hours_old] > shown[ten_hours_old]);
    }

    #[test]
    fn with_no_settling_the_hour_in_progress_shows_the_share_of_the_hour_passed() {
        let tweet = TweetId::minted_at(parse_instant("2023-12-30T10:15:00Z").unwrap());
        for now in ["2024-01-01T00:30:00Z", "2024-01-01T00:17:23.75Z", "2024-01-01T00:59:59Z"] {
            let m = Model { seed: 7, now: parse_instant(now).unwrap(), settle_hours: 0 };
            // The formula before `settle_hours`: whole seconds of the hour passed.
            let progress = (m.now - engagement::time::floor_hour(m.now)).num_seconds() as f64 / 3600.0;
            for ty in [EngagementType::Impressions, EngagementType::Engagements, EngagementType::Favorites] {
                // An hour later the hour that was in progress is final.
                let later = Model { now: m.now + chrono::Duration::hours(1), ..m };
                let finals = series(&later, tweet, ty, "2023-12-30T08:00:00Z", 41);
                let shown = series(&m, tweet, ty, "2023-12-30T08:00:00Z", 41);
                assert!(ty != EngagementType::Impressions || finals[40] > 0, "{now}: a count to share");
                assert_eq!(&shown[..40], &finals[..40], "{now} {ty}: past hours are final");
                assert_eq!(
                    shown[40],
                    (finals[40] as f64 * progress).floor() as u64,
                    "{now} {ty}: in progress"
                );
            }
        }
    }

    #[test]
    fn engagements_are_a_small_share_of_impressions_and_sizes_vary() {
        let m = model();
        let mut peaks = Vec::new();
        for k in 0..50u64 {
            let tweet = TweetId(
                TweetId::minted_at(parse_instant("2023-11-01T00:00:00Z").unwrap()).0 + k * 4_000_000_007,
            );
            let imp: u64 =
                series(&m, tweet, EngagementType::Impressions, "2023-11-01T00:00:00Z", 24 * 30).iter().sum();
            let eng: u64 =
                series(&m, tweet, EngagementType::Engagements, "2023-11-01T00:00:00Z", 24 * 30).iter().sum();
            assert!(eng * 5 < imp.max(1), "tweet {k}: {eng} engagements of {imp} impressions");
            peaks.push(imp);
        }
        let (min, max) = (peaks.iter().min().copied().unwrap_or(0), peaks.iter().max().copied().unwrap_or(0));
        assert!(max > 100 * min.max(1), "sizes span orders of magnitude: {min}..{max}");
    }
}
