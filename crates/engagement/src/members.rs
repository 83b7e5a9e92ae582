//! The members a question's body may name. The service's own (native) endpoints refuse a
//! body naming a member nobody reads, so a misspelt one is said rather than silently
//! ignored; each is named with the known name it is closest to, when one is close.

use serde_json::Value;

/// What a native question's body may name at its top level (members an endpoint does not
/// take, such as a range on `/totals`, are refused there with words of their own).
pub const QUESTION: &[&str] =
    &["tweet_ids", "engagement_types", "groupings", "start", "end", "time_zone", "partial", "derive", "top"];

/// What a watch's body may name.
pub const WATCH: &[&str] = &["tweet_ids", "engagement_types", "lookback_days", "refresh_secs"];

/// What a grouping may name.
pub const GROUPING: &[&str] = &["group_by"];

/// What `top` may name.
pub const TOP: &[&str] = &["by", "n"];

/// A message for each member of `body` nobody reads: at its top level, those not in
/// `members`; in each grouping, those not in [`GROUPING`]; in `top`, those not in [`TOP`].
/// Members of another shape than an object are left to validation.
pub fn unknown(body: &Value, members: &[&str]) -> Vec<String> {
    let mut said = Vec::new();
    let Some(top_level) = body.as_object() else { return said };
    for name in top_level.keys().filter(|k| !members.contains(&k.as_str())) {
        said.push(message(name, members, ""));
    }
    if let Some(Value::Object(groupings)) = top_level.get("groupings") {
        for (grouping, spec) in groupings {
            let Some(spec) = spec.as_object() else { continue };
            let place = format!(" in grouping {}", quoted(grouping));
            said.extend(
                spec.keys().filter(|k| !GROUPING.contains(&k.as_str())).map(|k| message(k, GROUPING, &place)),
            );
        }
    }
    if let Some(Value::Object(top)) = top_level.get("top") {
        said.extend(
            top.keys().filter(|k| !TOP.contains(&k.as_str())).map(|k| message(k, TOP, " in \"top\"")),
        );
    }
    said
}

/// `unknown member "name"` at `place`, with the closest of `known` when one is close.
fn message(name: &str, known: &[&str], place: &str) -> String {
    let mut said = format!("unknown member {}{place}", quoted(name));
    if let Some(near) = closest(name, known) {
        said.push_str(&format!(" (did you mean \"{near}\"?)"));
    }
    said
}

/// A name as JSON writes it, so any character in it reads plainly.
fn quoted(name: &str) -> String {
    serde_json::to_string(name).unwrap_or_else(|_| format!("\"{name}\""))
}

/// The name of `known` that `name` most likely meant: the same letters but for case, `_`
/// and `-`; or, for a name of three letters or more, one edit away (two from five on).
fn closest<'a>(name: &str, known: &[&'a str]) -> Option<&'a str> {
    let plain = |s: &str| {
        s.chars().filter(|c| *c != '_' && *c != '-').flat_map(char::to_lowercase).collect::<String>()
    };
    if let Some(same) = known.iter().find(|k| plain(k) == plain(name)) {
        return Some(same);
    }
    let allowed = match name.chars().count() {
        0..3 => return None,
        3..5 => 1,
        _ => 2,
    };
    known
        .iter()
        .map(|k| (edits(&plain(name), &plain(k)), *k))
        .filter(|(d, _)| *d <= allowed)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// The edits (insertions, deletions, substitutions) that turn `a` into `b`.
fn edits(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1).min(row[j] + 1).min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn members_nobody_reads_are_named_with_the_closest_known_one() {
        let body = json!({
            "tweet_ids": ["1"], "engagement_types": ["impressions"],
            "grouping": {"g": {"group_by": ["tweet.id"]}},
            "groupings": {"g": {"group_by": ["tweet.id"], "groupby": 1}, "h": "not an object"},
            "tweetIds": [], "colour": "blue", "top": {"by": "favorites", "count": 3},
        });
        let said = unknown(&body, QUESTION);
        assert_eq!(
            said,
            [
                "unknown member \"colour\"",
                "unknown member \"grouping\" (did you mean \"groupings\"?)",
                "unknown member \"tweetIds\" (did you mean \"tweet_ids\"?)",
                "unknown member \"groupby\" in grouping \"g\" (did you mean \"group_by\"?)",
                "unknown member \"count\" in \"top\"",
            ]
        );
        assert!(unknown(&json!({"tweet_ids": [], "groupings": {}}), QUESTION).is_empty());
        assert!(unknown(&json!([1, 2]), QUESTION).is_empty(), "the shape is validation's to refuse");
    }

    #[test]
    fn close_means_one_edit_or_two_for_longer_names() {
        assert_eq!(closest("timezone", &["time_zone", "top"]), Some("time_zone"));
        assert_eq!(closest("engagement_type", QUESTION), Some("engagement_types"));
        assert_eq!(closest("strat", QUESTION), Some("start"));
        assert_eq!(closest("tweets", QUESTION), Some("tweet_ids"));
        assert_eq!(closest("colour", QUESTION), None);
        assert_eq!(closest("x", TOP), None, "a letter or two is anything");
        assert_eq!(closest("N", TOP), Some("n"));
        assert_eq!(edits("kitten", "sitting"), 3);
    }
}
