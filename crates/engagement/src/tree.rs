//! Response trees: nested maps whose leaves are counts, plus the API's special members.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{OnceLock, RwLock};

use serde::de::{self, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::tweet_id::TweetId;

/// Top-level members of a response that are not groupings.
pub const RESERVED_MEMBERS: [&str; 6] = [
    "start",
    "end",
    "errors",
    "unavailable_tweet_ids",
    "unsupported_for_video_views_tweet_ids",
    "unsupported_for_impressions_engagements_tweet_ids",
];

/// The `errors` entry the API adds when `n` requested Tweets are deleted.
pub fn unavailable_error(n: usize) -> String {
    format!("{n} Tweet ID(s) are unavailable")
}

/// Whether an `errors` entry is the count of deleted Tweets (see [`unavailable_error`]).
pub fn is_unavailable_error(s: &str) -> bool {
    s.strip_suffix(" Tweet ID(s) are unavailable")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// A key of a branch: a Tweet ID, a type name, a day or an hour. Type names, hours and
/// days are shared static text (see [`key`]), so the keys of the leaves, which are most of
/// a tree, cost no allocation of their own.
pub type Key = Cow<'static, str>;

/// The hour keys, `00` to `23`.
pub const HOUR_KEYS: [&str; 24] = [
    "00", "01", "02", "03", "04", "05", "06", "07", "08", "09", "10", "11", "12", "13", "14", "15", "16",
    "17", "18", "19", "20", "21", "22", "23",
];

/// At most this many distinct day keys are shared (every day from 2014 to 2100 is fewer);
/// past it, day keys are owned like any other.
const MAX_SHARED_DAYS: usize = 40_000;

/// The key for `text`: shared static text for a type name, an hour or a day, else owned.
pub fn key(text: String) -> Key {
    match shared_key(&text) {
        Some(k) => Key::Borrowed(k),
        None => Key::Owned(text),
    }
}

/// The key for a day `YYYY-MM-DD` (or a month `YYYY-MM`) of the calendar.
pub fn day_key(text: &str) -> Key {
    match shared_day(text) {
        Some(k) => Key::Borrowed(k),
        None => Key::Owned(text.to_owned()),
    }
}

fn shared_key(text: &str) -> Option<&'static str> {
    match text.len() {
        2 => HOUR_KEYS.iter().find(|h| **h == text).copied(),
        7 | 10 if text.as_bytes()[4] == b'-' => shared_day(text),
        _ => text.parse::<crate::vocabulary::EngagementType>().ok().map(|t| t.name()),
    }
}

/// Days (and months) are interned once per process: there are a few thousand that can ever
/// be asked about, and each answer repeats them once per Tweet and type.
fn shared_day(text: &str) -> Option<&'static str> {
    static DAYS: OnceLock<RwLock<HashMap<String, &'static str>>> = OnceLock::new();
    let days = DAYS.get_or_init(Default::default);
    if let Some(k) = days.read().unwrap_or_else(|e| e.into_inner()).get(text) {
        return Some(k);
    }
    let date = match text.len() {
        7 => chrono::NaiveDate::parse_from_str(&format!("{text}-01"), "%Y-%m-%d").ok()?,
        10 => chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?,
        _ => return None,
    };
    if !(2006..=2100).contains(&chrono::Datelike::year(&date)) {
        return None;
    }
    let mut days = days.write().unwrap_or_else(|e| e.into_inner());
    if days.len() >= MAX_SHARED_DAYS {
        return None;
    }
    Some(*days.entry(text.to_owned()).or_insert_with(|| Box::leak(text.to_owned().into_boxed_str())))
}

/// One node of a grouping: a count, or keys leading to more nodes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Node {
    Count(u64),
    Branch(Branch),
}

/// The children of a node, kept sorted by key with no key twice, so lookups are binary
/// searches, sums are linear merges, and serialization is deterministic.
#[derive(Debug, Clone, PartialEq, Eq, Default, Hash)]
pub struct Branch {
    entries: Vec<(Key, Node)>,
}

impl Branch {
    /// A branch from entries in any order; of two entries with one key, the later wins.
    pub fn from_entries(mut entries: Vec<(Key, Node)>) -> Branch {
        if !entries.windows(2).all(|w| w[0].0 < w[1].0) {
            entries.reverse();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            entries.dedup_by(|later, earlier| later.0 == earlier.0);
        }
        Branch { entries }
    }

    /// The child at `key`.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entries.binary_search_by(|(k, _)| k.as_ref().cmp(key)).ok().map(|i| &self.entries[i].1)
    }

    /// The children in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Node)> {
        self.entries.iter().map(|(k, v)| (k.as_ref(), v))
    }

    /// How many children.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no children.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Adds `other` in place: keys already here are summed below, new keys are appended
    /// and the entries re-sorted only if they landed out of order. Answers of later
    /// windows add later days, so most merges only append; the vector grows amortized
    /// rather than being rebuilt.
    fn absorb(&mut self, other: Branch) -> Result<(), TreeError> {
        if self.entries.is_empty() {
            self.entries = other.entries;
            return Ok(());
        }
        let sorted = self.entries.len();
        for (key, node) in other.entries {
            match self.entries[..sorted].binary_search_by(|(k, _)| k.as_ref().cmp(key.as_ref())) {
                Ok(i) => self.entries[i].1.absorb(node).map_err(|e| e.under(&key))?,
                Err(_) => self.entries.push((key, node)),
            }
        }
        if self.entries.len() > sorted && sorted > 0 && self.entries[sorted - 1].0 > self.entries[sorted].0 {
            // Two sorted runs: the stable sort merges them in linear time.
            self.entries.sort_by(|a, b| a.0.cmp(&b.0));
        }
        Ok(())
    }
}

/// Why two trees could not be added up; `path` is the keys from the root, `/`-separated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TreeError {
    #[error("counts at {path} overflow 64 bits when added")]
    Overflow { path: String },
    #[error("at {path} one answer has a count where another has keys")]
    Shape { path: String },
}

impl TreeError {
    /// The same error one level down, under `key` (paths are built only on failure).
    fn under(self, key: &str) -> TreeError {
        let join = |path: String| if path.is_empty() { key.to_string() } else { format!("{key}/{path}") };
        match self {
            TreeError::Overflow { path } => TreeError::Overflow { path: join(path) },
            TreeError::Shape { path } => TreeError::Shape { path: join(path) },
        }
    }
}

impl Node {
    /// An empty branch.
    pub fn branch() -> Node {
        Node::Branch(Branch::default())
    }

    /// Adds `other` into `self`: equal paths add up, new paths are inserted.
    pub fn absorb(&mut self, other: Node) -> Result<(), TreeError> {
        match (self, other) {
            (Node::Count(a), Node::Count(b)) => {
                *a = a.checked_add(b).ok_or(TreeError::Overflow { path: String::new() })?;
                Ok(())
            }
            (Node::Branch(mine), Node::Branch(theirs)) => mine.absorb(theirs),
            _ => Err(TreeError::Shape { path: String::new() }),
        }
    }

    /// The child at `key`, if this is a branch that has it.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match self {
            Node::Branch(b) => b.get(key),
            Node::Count(_) => None,
        }
    }

    /// Calls `each` with every count and the keys leading to it, in the order the answer
    /// is written (depth first, keys sorted).
    pub fn for_each_count<'a>(&'a self, each: &mut impl FnMut(&[&'a str], u64)) {
        fn walk<'a>(node: &'a Node, path: &mut Vec<&'a str>, each: &mut impl FnMut(&[&'a str], u64)) {
            match node {
                Node::Count(c) => each(path, *c),
                Node::Branch(b) => {
                    for (key, child) in b.iter() {
                        path.push(key);
                        walk(child, path, each);
                        path.pop();
                    }
                }
            }
        }
        walk(self, &mut Vec::with_capacity(4), each);
    }
}

/// How counts are written: as the API does (`"551"`) or as JSON integers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CountStyle {
    #[default]
    Strings,
    Integers,
}

/// A whole answer.
#[derive(Debug, Clone, PartialEq, Eq, Default, Hash)]
pub struct Response {
    pub start: Option<String>,
    pub end: Option<String>,
    pub errors: Vec<String>,
    pub unavailable_tweet_ids: Vec<TweetId>,
    pub unsupported_for_video_views_tweet_ids: Vec<TweetId>,
    pub unsupported_for_impressions_engagements_tweet_ids: Vec<TweetId>,
    /// Grouping name to its tree.
    pub groupings: BTreeMap<String, Node>,
}

impl Response {
    /// The bytes one entry of a tree takes, besides a key of its own: every count of an
    /// answer takes at least this much.
    pub const ENTRY_BYTES: u64 = std::mem::size_of::<(Key, Node)>() as u64;

    /// A view that serializes with counts in `style`.
    pub fn styled(&self, style: CountStyle) -> Styled<'_, Response> {
        Styled { value: self, style }
    }

    /// About the bytes the answer holds in memory: its trees' entries and the keys they own
    /// (keys shared between answers, such as hours and days, are not counted).
    pub fn held_bytes(&self) -> u64 {
        fn of(node: &Node) -> u64 {
            match node {
                Node::Count(_) => 0,
                Node::Branch(b) => b
                    .entries
                    .iter()
                    .map(|(k, n)| {
                        let owned = if let Key::Owned(text) = k { text.len() as u64 } else { 0 };
                        Response::ENTRY_BYTES + owned + of(n)
                    })
                    .sum(),
            }
        }
        let ids = self.unavailable_tweet_ids.len()
            + self.unsupported_for_video_views_tweet_ids.len()
            + self.unsupported_for_impressions_engagements_tweet_ids.len();
        let lists = (ids * std::mem::size_of::<TweetId>()) as u64;
        self.groupings
            .iter()
            .map(|(name, node)| Self::ENTRY_BYTES + name.len() as u64 + of(node))
            .sum::<u64>()
            + lists
    }
}

/// A value paired with the style its counts are written in.
#[derive(Debug, Clone, Copy)]
pub struct Styled<'a, T> {
    value: &'a T,
    style: CountStyle,
}

impl Serialize for Styled<'_, Node> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.value {
            Node::Count(c) => match self.style {
                // Written with no formatter in between: answers are mostly counts.
                CountStyle::Strings => s.serialize_str(itoa::Buffer::new().format(*c)),
                CountStyle::Integers => s.serialize_u64(*c),
            },
            Node::Branch(b) => {
                let mut m = s.serialize_map(Some(b.len()))?;
                for (k, v) in b.iter() {
                    m.serialize_entry(k, &Styled { value: v, style: self.style })?;
                }
                m.end()
            }
        }
    }
}

impl Serialize for Node {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Styled { value: self, style: CountStyle::Strings }.serialize(s)
    }
}

impl Serialize for Styled<'_, Response> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let r = self.value;
        let mut m = s.serialize_map(None)?;
        if let Some(start) = &r.start {
            m.serialize_entry("start", start)?;
        }
        if let Some(end) = &r.end {
            m.serialize_entry("end", end)?;
        }
        for (name, ids) in [
            ("unavailable_tweet_ids", &r.unavailable_tweet_ids),
            ("unsupported_for_video_views_tweet_ids", &r.unsupported_for_video_views_tweet_ids),
            (
                "unsupported_for_impressions_engagements_tweet_ids",
                &r.unsupported_for_impressions_engagements_tweet_ids,
            ),
        ] {
            if !ids.is_empty() {
                m.serialize_entry(name, ids)?;
            }
        }
        if !r.errors.is_empty() {
            m.serialize_entry("errors", &r.errors)?;
        }
        for (name, node) in &r.groupings {
            m.serialize_entry(name, &Styled { value: node, style: self.style })?;
        }
        m.end()
    }
}

impl Serialize for Response {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.styled(CountStyle::Strings).serialize(s)
    }
}

/// Reads a count from its decimal string.
pub fn parse_count(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a count (a decimal string or a non-negative integer) or an object of counts")
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
        Ok(Node::Count(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
        u64::try_from(v).map(Node::Count).map_err(|_| E::custom(format!("negative count {v}")))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
        Err(E::custom(format!("count {v} is not a whole number that fits in 64 bits")))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
        parse_count(v)
            .map(Node::Count)
            .ok_or_else(|| E::custom(format!("\"{v}\" is not a count (decimal digits that fit in 64 bits)")))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Node, A::Error> {
        let mut entries = Vec::with_capacity(access.size_hint().unwrap_or(0));
        while let Some((k, v)) = access.next_entry::<String, Node>()? {
            entries.push((key(k), v));
        }
        Ok(Node::Branch(Branch::from_entries(entries)))
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

/// An entry of `errors`: the API sends strings; anything else is kept as its JSON text.
struct ErrorEntry(String);

impl<'de> Deserialize<'de> for ErrorEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        Ok(ErrorEntry(match v {
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        }))
    }
}

impl<'de> Deserialize<'de> for Response {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ResponseVisitor;
        impl<'de> Visitor<'de> for ResponseVisitor {
            type Value = Response;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an Engagement API response object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Response, A::Error> {
                let mut r = Response::default();
                while let Some(key) = access.next_key::<String>()? {
                    match key.as_str() {
                        "start" => r.start = Some(access.next_value()?),
                        "end" => r.end = Some(access.next_value()?),
                        "errors" => {
                            let entries: Vec<ErrorEntry> = access.next_value()?;
                            r.errors = entries.into_iter().map(|e| e.0).collect();
                        }
                        "unavailable_tweet_ids" => r.unavailable_tweet_ids = access.next_value()?,
                        "unsupported_for_video_views_tweet_ids" => {
                            r.unsupported_for_video_views_tweet_ids = access.next_value()?
                        }
                        "unsupported_for_impressions_engagements_tweet_ids" => {
                            r.unsupported_for_impressions_engagements_tweet_ids = access.next_value()?
                        }
                        _ => {
                            let node: Node = access.next_value()?;
                            r.groupings.insert(key, node);
                        }
                    }
                }
                Ok(r)
            }
        }
        d.deserialize_map(ResponseVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(v: serde_json::Value) -> Node {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn counts_parse_from_strings_and_integers_only() {
        assert_eq!(node(json!("551")), Node::Count(551));
        assert_eq!(node(json!(26)), Node::Count(26));
        assert_eq!(node(json!("18446744073709551615")), Node::Count(u64::MAX));
        for bad in [
            json!(-1),
            json!(1.5),
            json!("-1"),
            json!("1.0"),
            json!(""),
            json!("18446744073709551616"),
            json!(true),
            json!(null),
        ] {
            assert!(serde_json::from_value::<Node>(bad.clone()).is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn absorb_adds_equal_paths_and_inserts_new_ones() {
        let mut a = node(json!({"1": {"impressions": "5"}, "2": {"impressions": "1"}}));
        a.absorb(node(json!({"1": {"impressions": "7", "engagements": "1"}}))).unwrap();
        assert_eq!(
            a,
            node(json!({"1": {"impressions": "12", "engagements": "1"}, "2": {"impressions": "1"}}))
        );
        let mut max = Node::Count(u64::MAX);
        assert!(matches!(max.absorb(Node::Count(1)), Err(TreeError::Overflow { .. })));
        let mut shaped = node(json!({"a": "1"}));
        let err = shaped.absorb(node(json!({"a": {"b": "1"}}))).unwrap_err();
        assert_eq!(err, TreeError::Shape { path: "a".into() });
    }

    #[test]
    fn serializes_counts_as_strings_or_integers_with_sorted_keys() {
        let r: Response = serde_json::from_value(json!({
            "end": "2015-08-15T00:00:00Z", "start": "2015-08-01T00:00:00Z",
            "g": {"2": {"b": 2, "a": "1"}}
        }))
        .unwrap();
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"start":"2015-08-01T00:00:00Z","end":"2015-08-15T00:00:00Z","g":{"2":{"a":"1","b":"2"}}}"#
        );
        assert_eq!(
            serde_json::to_string(&r.styled(CountStyle::Integers)).unwrap(),
            r#"{"start":"2015-08-01T00:00:00Z","end":"2015-08-15T00:00:00Z","g":{"2":{"a":1,"b":2}}}"#
        );
    }
}
